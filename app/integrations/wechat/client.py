"""The WeChat server API, as the mini-program's back end uses it: code2session, the stable
access token, the phone number from `getPhoneNumber`, and subscribe messages.

One `httpx.AsyncClient` (created in the app's lifespan, or by the worker) is shared by every
call.  Failures become `WechatError`s (see `errors.py`): a busy WeChat (-1), HTTP 5xx and
transport failures are retried a bounded number of times with exponential backoff, then
become 503 `wechat_unavailable`; an access token WeChat calls invalid (40001) is refreshed
once and the call repeated.

Nothing here logs an openid, a phone number, a session key or a token.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.integrations.wechat import errors as e
from app.integrations.wechat.token_store import AccessTokenStore

logger = logging.getLogger("quyu.wechat")

_TOKEN_ERRCODES = frozenset({e.CODE_INVALID_CREDENTIAL, 40014, 42001})


@dataclass(frozen=True)
class WechatSession:
    """What `sns/jscode2session` says about a `wx.login` code.  Never log or return it."""

    openid: str
    session_key: str
    unionid: str | None

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return "WechatSession(<redacted>)"


@dataclass(frozen=True)
class WechatPhone:
    pure_phone_number: str
    country_code: str

    def __repr__(self) -> str:
        return "WechatPhone(<redacted>)"


def raise_for_errcode(errcode: int) -> None:
    """Map a WeChat errcode to our error; 0 is success."""
    if errcode == 0:
        return
    if errcode in (e.CODE_INVALID_CODE, e.CODE_CODE_USED):
        raise e.WechatCodeInvalid(errcode)
    if errcode == e.CODE_API_FREQ_LIMIT:
        raise e.WechatRateLimited(errcode)
    if errcode == e.CODE_HIGH_RISK_USER:
        raise e.WechatUserBlocked(errcode)
    if errcode == e.CODE_NOT_SUBSCRIBED:
        raise e.WechatNotSubscribed(errcode)
    if errcode == e.CODE_SYSTEM_BUSY:
        raise e.WechatUnavailable(errcode)
    logger.warning("wechat refused a request", extra={"wechat_errcode": errcode})
    raise e.WechatRejected(errcode)


class WechatClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self.http = http
        self.settings = settings
        self.tokens = AccessTokenStore(sessionmaker, settings, self._fetch_stable_token)

    @staticmethod
    def new_http_client(settings: Settings) -> httpx.AsyncClient:
        # httpx logs every request URL at INFO; WeChat's URLs carry the app secret, codes and
        # the access token in their query strings, so those lines must never be written.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        return httpx.AsyncClient(
            base_url=settings.wechat_api_base,
            timeout=httpx.Timeout(settings.wechat_timeout_seconds),
            headers={"User-Agent": "quyu"},
        )

    @property
    def configured(self) -> bool:
        return bool(self.settings.wechat_app_id and self.settings.wechat_app_secret)

    def _credentials(self) -> tuple[str, str]:
        secret = self.settings.wechat_app_secret
        if not self.settings.wechat_app_id or secret is None:
            logger.error("QUYU_WECHAT_APP_ID / QUYU_WECHAT_APP_SECRET are not set")
            raise e.WechatUnavailable()
        return self.settings.wechat_app_id, secret.get_secret_value()

    # --- transport ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        retries: int | None = None,
    ) -> dict[str, Any]:
        """One call with bounded retries on transient failures; returns the JSON body with
        its `errcode` (0 when absent) still to be judged by the caller."""
        retries = self.settings.wechat_retries if retries is None else retries
        last_errcode: int | None = None
        for attempt in range(retries + 1):
            if attempt:
                delay = self.settings.wechat_retry_backoff_seconds * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (1 + random.random() / 2))  # noqa: S311
            try:
                response = await self.http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                logger.warning(
                    "wechat unreachable", extra={"path": path, "error_type": type(exc).__name__}
                )
                continue
            if response.status_code >= 500:
                logger.warning(
                    "wechat answered with a server error",
                    extra={"path": path, "http_status": response.status_code},
                )
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                logger.warning("wechat answered without JSON", extra={"path": path})
                raise e.WechatRejected()
            errcode = body.get("errcode") or 0
            if not isinstance(errcode, int):
                raise e.WechatRejected()
            if errcode == e.CODE_SYSTEM_BUSY:
                last_errcode = errcode
                continue
            body["errcode"] = errcode
            return body
        raise e.WechatUnavailable(last_errcode)

    async def _with_token(
        self, path: str, json: dict[str, Any], *, retries: int | None = None
    ) -> dict[str, Any]:
        """A call authenticated with the access token; on 40001 the token is refreshed once
        and the call repeated."""
        token = await self.tokens.get()
        body = await self._request(
            "POST", path, params={"access_token": token}, json=json, retries=retries
        )
        if body["errcode"] in _TOKEN_ERRCODES:
            logger.info("wechat access token refused; refreshing once")
            token = await self.tokens.get(stale=token)
            body = await self._request(
                "POST", path, params={"access_token": token}, json=json, retries=retries
            )
            if body["errcode"] in _TOKEN_ERRCODES:
                raise e.WechatUnavailable(body["errcode"])
        return body

    # --- endpoints -------------------------------------------------------------------------

    async def _fetch_stable_token(self, force_refresh: bool) -> tuple[str, int]:
        """`cgi-bin/stable_token`: (access_token, expires_in seconds)."""
        app_id, secret = self._credentials()
        body = await self._request(
            "POST",
            "/cgi-bin/stable_token",
            json={
                "grant_type": "client_credential",
                "appid": app_id,
                "secret": secret,
                "force_refresh": force_refresh,
            },
        )
        raise_for_errcode(body["errcode"])
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise e.WechatRejected()
        return token, expires_in

    async def code_to_session(self, code: str) -> WechatSession:
        """`sns/jscode2session`: the openid (and unionid) behind a `wx.login` code."""
        app_id, secret = self._credentials()
        body = await self._request(
            "GET",
            "/sns/jscode2session",
            params={
                "appid": app_id,
                "secret": secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )
        raise_for_errcode(body["errcode"])
        openid, session_key = body.get("openid"), body.get("session_key")
        unionid = body.get("unionid")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str):
            raise e.WechatRejected()
        return WechatSession(
            openid=openid,
            session_key=session_key,
            unionid=unionid if isinstance(unionid, str) and unionid else None,
        )

    async def phone_number(self, phone_code: str) -> WechatPhone:
        """`wxa/business/getuserphonenumber`: the number behind a `getPhoneNumber` code."""
        body = await self._with_token("/wxa/business/getuserphonenumber", {"code": phone_code})
        raise_for_errcode(body["errcode"])
        info = body.get("phone_info")
        if not isinstance(info, dict) or not isinstance(info.get("purePhoneNumber"), str):
            raise e.WechatRejected()
        return WechatPhone(
            pure_phone_number=info["purePhoneNumber"],
            country_code=str(info.get("countryCode", "86")),
        )

    async def send_subscribe_message(
        self,
        *,
        openid: str,
        template_id: str,
        data: dict[str, str],
        page: str | None = None,
        retries: int | None = None,
    ) -> None:
        """`cgi-bin/message/subscribe/send`; raises WechatNotSubscribed on 43101."""
        message: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
            "miniprogram_state": self.settings.wechat_miniprogram_state,
            "lang": "zh_CN",
        }
        if page:
            message["page"] = page
        body = await self._with_token("/cgi-bin/message/subscribe/send", message, retries=retries)
        raise_for_errcode(body["errcode"])
