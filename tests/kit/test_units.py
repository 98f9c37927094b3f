"""Units of the kit: settings, crypto, cursors, throttle, validators, tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import ConfigError, Settings
from app.core import crypto
from app.core.errors import AppError, validation_errors
from app.core.pagination import decode_cursor, encode_cursor
from app.core.throttle import Throttled, hit
from app.core.validators import normalize_id_number, normalize_mainland_mobile

KEY = base64.b64encode(secrets.token_bytes(32)).decode()


class TestSettings:
    def test_production_refuses_missing_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("QUYU_JWT_SECRET", "QUYU_FIELD_ENCRYPTION_KEY", "QUYU_BLIND_INDEX_KEY"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ConfigError) as info:
            Settings(env="production")
        message = str(info.value)
        assert "QUYU_JWT_SECRET" in message
        assert "QUYU_FIELD_ENCRYPTION_KEY" in message

    @pytest.mark.parametrize("weak", ["secret", "short", "changeme" * 1])
    def test_production_refuses_weak_jwt_secret(self, weak: str) -> None:
        with pytest.raises(ConfigError, match="QUYU_JWT_SECRET"):
            Settings(
                env="production",
                jwt_secret=SecretStr(weak),
                field_encryption_key=SecretStr(KEY),
                blind_index_key=SecretStr(KEY),
            )

    def test_production_refuses_bad_key(self) -> None:
        with pytest.raises(ConfigError, match="QUYU_BLIND_INDEX_KEY"):
            Settings(
                env="production",
                jwt_secret=SecretStr(secrets.token_urlsafe(48)),
                field_encryption_key=SecretStr(KEY),
                blind_index_key=SecretStr("not base64 at all!"),
            )

    def test_production_accepts_strong_secrets(self) -> None:
        settings = Settings(
            env="production",
            jwt_secret=SecretStr(secrets.token_urlsafe(48)),
            field_encryption_key=SecretStr(KEY),
            blind_index_key=SecretStr(KEY),
        )
        assert settings.env == "production"

    def test_development_generates_secrets_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("QUYU_JWT_SECRET", "QUYU_FIELD_ENCRYPTION_KEY", "QUYU_BLIND_INDEX_KEY"):
            monkeypatch.delenv(name, raising=False)
        path = tmp_path / "secrets.json"
        first = Settings(env="development", secrets_file=path)
        first.ensure_dev_secrets()
        second = Settings(env="development", secrets_file=path)
        second.ensure_dev_secrets()
        assert first.jwt_secret is not None and second.jwt_secret is not None
        assert first.jwt_secret.get_secret_value() == second.jwt_secret.get_secret_value()
        assert set(json.loads(path.read_text())) == {
            "jwt_secret",
            "field_encryption_key",
            "blind_index_key",
        }
        assert path.stat().st_mode & 0o077 == 0


class TestCrypto:
    def test_round_trip_and_no_plaintext(self) -> None:
        blob = crypto.encrypt("11010519491231002X", context="users.id_number")
        assert b"11010519491231002X" not in blob
        assert crypto.decrypt(blob, context="users.id_number") == "11010519491231002X"

    def test_tampering_and_wrong_context_fail(self) -> None:
        blob = bytearray(crypto.encrypt("secret", context="a"))
        with pytest.raises(Exception):  # noqa: B017, PT011
            crypto.decrypt(bytes(blob), context="b")
        blob[-1] ^= 1
        with pytest.raises(Exception):  # noqa: B017, PT011
            crypto.decrypt(bytes(blob), context="a")

    def test_blind_index_is_keyed_and_stable(self) -> None:
        a = crypto.blind_index("x", context="c")
        assert a == crypto.blind_index("x", context="c")
        assert a != crypto.blind_index("x", context="d")
        assert len(a) == 64

    def test_masks(self) -> None:
        assert crypto.mask_id_number("330283199001011234") == "3302**********1234"
        assert crypto.mask_phone("13912345678") == "139****5678"


class TestValidationErrors:
    @pytest.mark.parametrize(
        ("loc", "field"),
        [
            (("body", "location", "lat"), "location.lat"),
            (("body", "path"), "path"),  # a field called "path" keeps its name
            (("query", "body", "path"), "body.path"),
            (("path", "org_id"), "org_id"),
            (("body",), "body"),
            (("body", "ids", 3), "ids.3"),
        ],
    )
    def test_field_names_drop_only_the_location(
        self, loc: tuple[str | int, ...], field: str
    ) -> None:
        exc = RequestValidationError([{"type": "missing", "loc": loc, "msg": "Field required"}])
        assert validation_errors(exc)[0]["field"] == field


class TestCursor:
    def test_round_trip(self) -> None:
        values = [datetime(2026, 1, 2, tzinfo=UTC), uuid.uuid4(), "x", 3, 2.5]
        shape = (datetime, uuid.UUID, str, int, float)
        assert decode_cursor(encode_cursor(values), shape) == values

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "!!!",
            "e30",
            encode_cursor([1]),
            "W3siZHQiOjF9XQ",
            encode_cursor(["x", "y"]),
            encode_cursor([uuid.UUID(int=1), datetime(2026, 1, 2, tzinfo=UTC)]),
            encode_cursor([datetime(2026, 1, 2), uuid.UUID(int=1)]),  # naive
            encode_cursor([None, uuid.UUID(int=1)]),
            encode_cursor([True, uuid.UUID(int=1)]),
            # Decodes, but overflows when converted to UTC.
            encode_cursor([datetime.fromisoformat("0001-01-01T00:00:00+05:00"), uuid.UUID(int=1)]),
        ],
    )
    def test_garbage_is_invalid_cursor(self, bad: str) -> None:
        with pytest.raises(AppError) as info:
            decode_cursor(bad, (datetime, uuid.UUID))
        assert info.value.code == "invalid_cursor"


class TestValidators:
    @pytest.mark.parametrize("raw", ["13900000000", "+86 139-0000-0000", "8613900000000"])
    def test_mobile_ok(self, raw: str) -> None:
        assert normalize_mainland_mobile(raw) == "13900000000"

    @pytest.mark.parametrize("raw", ["12345678901", "021-12345678", "+1 650 253 0000", "abc", ""])
    def test_mobile_bad(self, raw: str) -> None:
        with pytest.raises(ValueError, match="mobile"):
            normalize_mainland_mobile(raw)

    def test_id_number(self) -> None:
        assert normalize_id_number("11010519491231002x") == "11010519491231002X"
        with pytest.raises(ValueError, match="ID"):
            normalize_id_number("110105194912310021")  # bad checksum
        with pytest.raises(ValueError, match="ID"):
            normalize_id_number("110105491231002")  # old 15-digit form not accepted


class TestThrottle:
    async def test_limit_then_retry_after(
        self, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        for _ in range(3):
            await hit(sessionmaker, "t:1", limit=3, window_seconds=60, now=120.0)
        with pytest.raises(Throttled) as info:
            await hit(sessionmaker, "t:1", limit=3, window_seconds=60, now=150.0)
        assert info.value.status == 429
        assert info.value.headers["Retry-After"] == "30"
        # a new window starts afresh; other keys are independent
        await hit(sessionmaker, "t:1", limit=3, window_seconds=60, now=181.0)
        await hit(sessionmaker, "t:2", limit=3, window_seconds=60, now=150.0)

    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_concurrent_hits_are_counted_exactly(
        self, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        async def one() -> bool:
            try:
                await hit(sessionmaker, "t:burst", limit=10, window_seconds=60, now=60.0)
            except Throttled:
                return False
            return True

        results = await asyncio.gather(*(one() for _ in range(40)))
        assert results.count(True) == 10
