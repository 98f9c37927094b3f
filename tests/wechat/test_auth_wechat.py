"""POST /auth/wechat, POST /auth/wechat/bind, DELETE /me/wechat against the WeChat stand-in
running as a real HTTP server."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.crypto import decrypt, sha256_hex
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.fake import PATH_PHONE, PATH_SESSION, PATH_TOKEN
from app.models.auth import UserSession
from app.models.kit import AuditLog
from app.models.user import User
from app.models.wechat import WechatAccount, WechatBindToken
from app.wechat import service
from tests.fixtures.factories import login, make_user
from tests.fixtures.problems import assert_problem
from tests.wechat.conftest import APP_SECRET, FakeWechat
from tests.wechat.helpers import bind_member, count

pytestmark = pytest.mark.usefixtures("wechat")


async def sign_in(client: httpx.AsyncClient, code: str) -> httpx.Response:
    return await client.post("/auth/wechat", json={"code": code})


async def bind_token_for(client: httpx.AsyncClient, code: str) -> str:
    r = await sign_in(client, code)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bind_required"] is True
    token: str = body["bind_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestAuthWechat:
    async def test_unbound_user_gets_a_single_use_bind_token_stored_hashed(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        r = await sign_in(client, "alice.1")
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["bind_required"] is True
        assert set(body) == {"bind_required", "bind_token", "expires_in"}
        assert body["expires_in"] == 600
        row = (await db.execute(select(WechatBindToken))).scalar_one()
        assert row.token_hash == sha256_hex(body["bind_token"])
        assert row.used_at is None
        openid = fake.state.openid_for("alice")
        # The openid is kept encrypted, found by its blind index; nothing in the clear.
        assert openid.encode() not in row.openid_enc
        assert decrypt(row.openid_enc, context=service.OPENID) == openid
        assert row.openid_index == service.openid_index(openid)
        assert openid not in r.text

    async def test_bound_user_gets_tokens_and_the_session_key_is_kept_encrypted(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        user, _ = await bind_member(db, fake, wx_user="bob")
        r = await client.post(
            "/auth/wechat", json={"code": "bob.1"}, headers={"User-Agent": "miniprogram"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["bind_required"] is False
        assert body["token_type"] == "bearer"
        assert body["refresh_token"]
        assert "session_key" not in r.text and "openid" not in r.text
        me = await client.get("/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == str(user.id)
        session = (await db.execute(select(UserSession))).scalar_one()
        assert session.auth_method == "wechat"
        assert session.device == "miniprogram"
        account = (await db.execute(select(WechatAccount))).scalar_one()
        await db.refresh(account)
        assert decrypt(account.session_key_enc, context=service.SESSION_KEY) != "k"
        assert await count(db, WechatBindToken) == 0
        # The refresh token works with the ordinary token endpoint.
        refreshed = await client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        )
        assert refreshed.status_code == 200, refreshed.text

    @pytest.mark.parametrize(
        ("code", "status", "problem"),
        [
            ("bad-1", 401, "wechat_code_invalid"),  # 40029
            ("used-1", 401, "wechat_code_invalid"),  # 40163
            ("limit-1", 429, "wechat_rate_limited"),  # 45011
            ("risky-1", 403, "wechat_user_blocked"),  # 40226
        ],
    )
    async def test_wechat_errors_are_mapped_and_nothing_is_written(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        fake: FakeWechat,
        code: str,
        status: int,
        problem: str,
    ) -> None:
        r = await sign_in(client, code)
        assert_problem(r, status, problem)
        if status == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")
        if status == 429:
            assert int(r.headers["retry-after"]) > 0
        assert fake.calls(PATH_SESSION) == 1  # not retried
        assert await count(db, WechatBindToken) == 0

    async def test_a_code_used_twice_is_refused_the_second_time(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        assert (await sign_in(client, "carol.1")).status_code == 200
        r = await sign_in(client, "carol.1")
        assert_problem(r, 401, "wechat_code_invalid")
        assert await count(db, WechatBindToken) == 1

    @pytest.mark.parametrize("code", ["busy-1", "down-1"])
    async def test_busy_or_failing_wechat_is_retried_a_bounded_number_of_times(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat, code: str
    ) -> None:
        r = await sign_in(client, code)
        body = assert_problem(r, 503, "wechat_unavailable")
        assert "retry-after" in r.headers
        assert "-1" not in body["detail"]
        assert fake.calls(PATH_SESSION) == 3  # one call and two retries
        assert await count(db, WechatBindToken) == 0

    async def test_a_transient_failure_then_success_signs_in(
        self, client: httpx.AsyncClient, fake: FakeWechat
    ) -> None:
        fake.state.fail_next(PATH_SESSION, errcode=-1)
        fake.state.fail_next(PATH_SESSION, http_status=500)
        r = await sign_in(client, "dave.1")
        assert r.status_code == 200, r.text
        assert fake.calls(PATH_SESSION) == 3

    async def test_wechat_not_configured_is_unavailable(
        self, app: FastAPI, client: httpx.AsyncClient, wechat: WechatClient, fake: FakeWechat
    ) -> None:
        settings = wechat.settings.model_copy(update={"wechat_app_id": ""})
        async with WechatClient.new_http_client(settings) as http:
            app.state.wechat = WechatClient(http, settings, app.state.sessionmaker)
            r = await sign_in(client, "erin.1")
        assert_problem(r, 503, "wechat_unavailable")
        assert fake.calls(PATH_SESSION) == 0

    async def test_wrong_app_secret_is_unavailable_not_leaked(
        self, app: FastAPI, client: httpx.AsyncClient, wechat: WechatClient, fake: FakeWechat
    ) -> None:
        settings = wechat.settings.model_copy(update={"wechat_app_secret": SecretStr("nope")})
        async with WechatClient.new_http_client(settings) as http:
            app.state.wechat = WechatClient(http, settings, app.state.sessionmaker)
            r = await sign_in(client, "erin.2")
        body = assert_problem(r, 503, "wechat_unavailable")
        assert "40125" not in r.text and "appsecret" not in body["detail"]

    async def test_a_disabled_account_cannot_sign_in(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        user = await make_user(db, is_active=False)
        await bind_member(db, fake, user, wx_user="frank")
        r = await sign_in(client, "frank.1")
        assert_problem(r, 403, "wechat_account_disabled")
        assert await count(db, UserSession) == 0

    @pytest.mark.parametrize(
        "payload",
        [{}, {"code": ""}, {"code": "a b"}, {"code": "x" * 129}, {"code": "ok", "x": 1}],
    )
    async def test_bad_input_is_422_and_nothing_is_written(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat, payload: object
    ) -> None:
        r = await client.post("/auth/wechat", json=payload)
        assert_problem(r, 422, "validation_error")
        assert r.json()["errors"]
        assert fake.calls(PATH_SESSION) == 0
        assert await count(db, WechatBindToken) == 0


class TestAuthWechatBind:
    async def test_a_new_phone_creates_a_member_account_and_signs_in(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        token = await bind_token_for(client, "gina.1")
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13912345678.1"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["account_created"] is True
        assert body["bind_required"] is False
        assert "13912345678" not in r.text
        user = (await db.execute(select(User))).scalar_one()
        assert user.phone == "13912345678"
        assert user.password_hash is None
        assert user.name == "微信用户"
        account = (await db.execute(select(WechatAccount))).scalar_one()
        assert account.user_id == user.id
        assert decrypt(account.openid_enc, context=service.OPENID) == fake.state.openid_for("gina")
        me = await client.get("/me", headers=bearer(body["access_token"]))
        assert me.json()["phone"] == "13912345678"
        # From now on the same WeChat user signs straight in.
        again = await sign_in(client, "gina.2")
        assert again.json()["bind_required"] is False
        audit = (await db.execute(select(AuditLog.action))).scalars().all()
        assert "wechat.bound" in audit

    async def test_an_existing_phone_binds_to_that_account(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        user = await make_user(db, phone="13712345678")
        token = await bind_token_for(client, "hank.1")
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13712345678"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["account_created"] is False
        account = (await db.execute(select(WechatAccount))).scalar_one()
        assert account.user_id == user.id
        assert await count(db, User) == 1

    async def test_the_bind_token_is_single_use(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        token = await bind_token_for(client, "ivy.1")
        first = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13612345678.1"}
        )
        assert first.status_code == 200
        second = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13612345678.2"}
        )
        assert_problem(second, 401, "wechat_bind_token_invalid")
        assert fake.calls(PATH_PHONE) == 1  # WeChat was not asked again
        assert await count(db, UserSession) == 1

    async def test_an_expired_bind_token_is_refused_without_asking_wechat(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        token = await bind_token_for(client, "jack.1")
        await db.execute(
            update(WechatBindToken).values(expires_at=clock.now() - timedelta(seconds=1))
        )
        await db.commit()
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13512345678"}
        )
        assert_problem(r, 401, "wechat_bind_token_invalid")
        assert fake.calls(PATH_PHONE) == 0
        assert await count(db, User) == 0
        assert await count(db, WechatAccount) == 0

    async def test_a_forged_bind_token_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": "f" * 43, "phone_code": "13512345678"}
        )
        assert_problem(r, 401, "wechat_bind_token_invalid")
        assert fake.calls(PATH_PHONE) == 0

    async def test_a_bad_or_reused_phone_code_leaves_the_bind_token_usable(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        token = await bind_token_for(client, "kate.1")
        bad = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "bad-phone"}
        )
        assert_problem(bad, 401, "wechat_code_invalid")
        ok = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13412345678"}
        )
        assert ok.status_code == 200, ok.text
        token2 = await bind_token_for(client, "leo.1")
        reused = await client.post(
            "/auth/wechat/bind", json={"bind_token": token2, "phone_code": "13412345678"}
        )
        assert_problem(reused, 401, "wechat_code_invalid")
        assert await count(db, WechatAccount) == 1

    @pytest.mark.parametrize(
        ("phone_code", "status", "problem"),
        [
            ("limit-1", 429, "wechat_rate_limited"),
            ("risky-1", 403, "wechat_user_blocked"),
            ("busy-1", 503, "wechat_unavailable"),
        ],
    )
    async def test_phone_number_errors_are_mapped(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        fake: FakeWechat,
        phone_code: str,
        status: int,
        problem: str,
    ) -> None:
        token = await bind_token_for(client, "mia.1")
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": phone_code}
        )
        assert_problem(r, status, problem)
        assert await count(db, User) == 0
        unused = (await db.execute(select(WechatBindToken.used_at))).scalar_one()
        assert unused is None

    async def test_an_invalid_access_token_is_refreshed_once_and_the_call_repeated(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        token = await bind_token_for(client, "ned.1")
        other = await bind_token_for(client, "ned2.1")
        first = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13312345678"}
        )
        assert first.status_code == 200
        assert fake.calls(PATH_TOKEN) == 1
        fake.state.invalidate_tokens()  # WeChat now answers 40001 to the cached token
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": other, "phone_code": "13312345679"}
        )
        assert r.status_code == 200, r.text
        assert fake.calls(PATH_TOKEN) == 2
        assert fake.calls(PATH_PHONE) == 3

    async def test_a_token_refused_twice_is_unavailable(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        token = await bind_token_for(client, "olga.1")
        fake.state.fail_next(PATH_PHONE, errcode=40001, times=2)
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13212345678"}
        )
        assert_problem(r, 503, "wechat_unavailable")
        assert fake.calls(PATH_TOKEN) == 2  # refreshed once, not more
        assert fake.calls(PATH_PHONE) == 2

    async def test_an_account_bound_to_another_wechat_user_is_a_conflict(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        user = await make_user(db, phone="13112345678")
        await bind_member(db, fake, user, wx_user="pat")
        token = await bind_token_for(client, "quinn.1")
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13112345678"}
        )
        assert_problem(r, 409, "wechat_already_bound")
        assert await count(db, WechatAccount) == 1
        assert await count(db, UserSession) == 0
        unused = (await db.execute(select(WechatBindToken.used_at))).scalar_one()
        assert unused is None

    @pytest.mark.parametrize(
        "payload",
        [
            {},
            {"bind_token": "short", "phone_code": "13812345678"},
            {"bind_token": "t" * 43},
            {"bind_token": "t" * 43, "phone_code": "13812345678", "phone": "1"},
            {"bind_token": "t" * 43, "phone_code": "1 2"},
        ],
    )
    async def test_bad_input_is_422_and_nothing_is_written(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat, payload: object
    ) -> None:
        r = await client.post("/auth/wechat/bind", json=payload)
        assert_problem(r, 422, "validation_error")
        assert fake.calls(PATH_PHONE) == 0
        assert await count(db, User) == 0


class TestWechatThrottle:
    """Both WeChat endpoints cost a call to WeChat and hand out tokens: attempts are limited
    per client address, counted before WeChat is called."""

    async def test_sign_in_flood_per_address(
        self,
        client: httpx.AsyncClient,
        fake: FakeWechat,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "auth_attempts_per_address", 3)
        monkeypatch.setattr(app.state.settings, "auth_window_seconds", 10**9)
        for i in range(3):
            assert (await sign_in(client, f"flood{i}.1")).status_code == 200
        calls = fake.calls(PATH_SESSION)
        r = await sign_in(client, "flood9.1")
        assert_problem(r, 429, "too_many_requests")
        assert int(r.headers["retry-after"]) >= 1
        assert fake.calls(PATH_SESSION) == calls  # WeChat was not asked
        # Behind a trusted proxy, another address is not affected.
        monkeypatch.setattr(app.state.settings, "trust_forwarded_for", True)
        r = await client.post(
            "/auth/wechat", json={"code": "flood8.1"}, headers={"X-Forwarded-For": "10.20.0.1"}
        )
        assert r.status_code == 200, r.text

    async def test_bind_flood_per_address(
        self,
        client: httpx.AsyncClient,
        fake: FakeWechat,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "auth_attempts_per_address", 2)
        monkeypatch.setattr(app.state.settings, "auth_window_seconds", 10**9)
        for i in range(2):
            r = await client.post(
                "/auth/wechat/bind",
                json={"bind_token": f"forged-{i}" + "x" * 40, "phone_code": "x.1"},
            )
            assert_problem(r, 401, "wechat_bind_token_invalid")
        calls = fake.calls(PATH_PHONE)
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": "forged-9" + "x" * 40, "phone_code": "x.1"}
        )
        assert_problem(r, 429, "too_many_requests")
        assert int(r.headers["retry-after"]) >= 1
        assert fake.calls(PATH_PHONE) == calls


class TestUnbind:
    async def test_unbinding_makes_the_next_sign_in_ask_to_bind(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        user, _ = await bind_member(db, fake, wx_user="rita")
        headers = await login(db, user)
        r = await client.delete("/me/wechat", headers=headers)
        assert r.status_code == 204, r.text
        assert await count(db, WechatAccount) == 0
        assert (await sign_in(client, "rita.1")).json()["bind_required"] is True
        audit = (await db.execute(select(AuditLog.action))).scalars().all()
        assert "wechat.unbound" in audit

    async def test_only_my_own_binding_is_removed(
        self, client: httpx.AsyncClient, db: AsyncSession, fake: FakeWechat
    ) -> None:
        await bind_member(db, fake, wx_user="sam")
        me = await make_user(db)
        r = await client.delete("/me/wechat", headers=await login(db, me))
        assert_problem(r, 404, "wechat_not_bound")
        assert await count(db, WechatAccount) == 1

    async def test_needs_a_signed_in_member(self, client: httpx.AsyncClient) -> None:
        r = await client.delete("/me/wechat")
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")


class TestNothingSecretIsLogged:
    async def test_secret_codes_openids_tokens_and_phones_stay_out_of_the_logs(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        fake: FakeWechat,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level("INFO")  # the level the service runs at
        token = await bind_token_for(client, "zoe.1")
        fake.state.invalidate_tokens()
        r = await client.post(
            "/auth/wechat/bind", json={"bind_token": token, "phone_code": "13012345678"}
        )
        assert r.status_code == 200, r.text
        assert_problem(await sign_in(client, "bad-zoe"), 401, "wechat_code_invalid")
        logged = caplog.text + "".join(str(rec.__dict__) for rec in caplog.records)
        secrets = [
            APP_SECRET,
            fake.state.openid_for("zoe"),
            token,
            r.json()["access_token"],
            r.json()["refresh_token"],
            "13012345678",
            "zoe.1",
            *fake.state.tokens,
        ]
        for secret in secrets:
            assert secret not in logged
