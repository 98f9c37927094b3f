"""One settings object for the whole service; every knob is a `QUYU_` environment variable.

With nothing set the service runs locally on SQLite.  Secrets (the JWT signing key and the
field-encryption keys) are generated once into a git-ignored local file in development; with
`QUYU_ENV=production` a missing or weak secret stops start-up with a clear message.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32
# Outside production, with QUYU_PUBLIC_BASE_URL / QUYU_ALLOWED_HOSTS unset: `make run`.
DEV_BASE_URL = "http://127.0.0.1:8000"
DEV_ALLOWED_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "::1")
WEAK_SECRETS = {"secret", "changeme", "change-me", "password", "dev", "development", "test"}


class ConfigError(RuntimeError):
    """Raised at start-up when the configuration cannot be used safely."""


class WechatTemplate(BaseModel):
    """A subscribe-message template: its id, the page it opens, and which value fills which
    template key (e.g. {"thing1": "org_name", "phrase2": "result"})."""

    template_id: str = ""
    page: str | None = None
    fields: dict[str, str] | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUYU_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./quyu.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # `quyu serve`: after SIGTERM, requests still open this long are cut and the process
    # exits.  With the preStop pause it stays under the grace period of deploy/k8s/api.yaml,
    # so that the process ends on its own before it is killed.
    shutdown_timeout_seconds: int = Field(default=25, ge=1, le=3600)
    # SQLite only: how long a connection waits for another process's write lock before
    # failing with "database is locked".  Within one process writers queue for the one
    # connection instead (app/db/session.py), so this is the safety net across processes.
    sqlite_busy_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    redis_url: str | None = None
    secrets_file: Path = Path(".quyu-secrets.json")

    # JWT
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_secret: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "quyu"
    jwt_audience: str = "quyu-api"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=3600)
    client_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)

    # Field encryption (AES-GCM) and blind index (HMAC-SHA256), base64 encoded 32-byte keys.
    field_encryption_key: SecretStr | None = None
    blind_index_key: SecretStr | None = None

    # Passwords: the zxcvbn score (0-4) a new password needs (app/core/passwords.py).
    password_min_score: int = Field(default=3, ge=0, le=4)

    # Password sign-in (app/core/signin_guard.py): failed sign-ins only are counted, per phone
    # and address together, per phone, and per address (high: carrier NAT puts many members
    # behind one address).  Past its allowance each further failure locks the key for twice as
    # long as the one before (base, 2 x base, 4 x base, ...) up to the cap.  A counter forgets its
    # allowance's worth of failures in `login_failure_decay_seconds`.  A success resets the
    # counters of its phone, and an address that signed in to a phone successfully within
    # `login_known_address_days` is not held by that phone's lock (only by its own pair's).
    login_failures_per_pair: int = Field(default=5, ge=1)
    login_failures_per_phone: int = Field(default=20, ge=1)
    login_failures_per_address: int = Field(default=300, ge=1)
    login_failure_decay_seconds: int = Field(default=3600, ge=1)
    login_lock_base_seconds: int = Field(default=1, ge=1)
    login_lock_max_seconds: int = Field(default=900, ge=1)
    login_known_address_days: int = Field(default=30, ge=0)
    # Other anonymous calls that cost a hash or a call to WeChat, or answer whether a phone is
    # registered (register, client credentials, WeChat sign-in and bind): attempts per address
    # in a fixed window.
    auth_attempts_per_address: int = Field(default=120, ge=1)
    auth_window_seconds: int = Field(default=300, ge=1)
    trust_forwarded_for: bool = False
    # PATCH /me: requests that send an ID number, per account and day (the answer does not
    # tell whether the number belongs to another account; this bounds the guessing anyway).
    id_number_changes_per_day: int = Field(default=3, ge=1)

    # WeChat mini-program (app/integrations/wechat); the base URL points at `quyu fake-wechat`
    # on a developer's machine.
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_app_id: str = ""
    wechat_app_secret: SecretStr | None = None
    wechat_timeout_seconds: float = Field(default=5.0, gt=0)
    wechat_retries: int = Field(default=2, ge=0, le=10)
    wechat_retry_backoff_seconds: float = Field(default=0.2, ge=0)
    wechat_token_refresh_margin_seconds: int = Field(default=300, ge=0)
    wechat_bind_token_ttl_seconds: int = Field(default=600, ge=30, le=3600)
    # Subscribe messages: template per kind (checkin_decision, contribution_decision,
    # waitlist_promoted, activity_cancelled, activity_reminder), as JSON.
    wechat_templates: dict[str, WechatTemplate] = Field(default_factory=dict)
    wechat_miniprogram_state: Literal["developer", "trial", "formal"] = "formal"
    wechat_reminder_lead_minutes: int = Field(default=120, ge=1)
    wechat_worker_in_app: bool = False
    wechat_worker_poll_seconds: float = Field(default=2.0, gt=0)
    wechat_worker_lease_seconds: float = Field(default=60.0, gt=0)
    wechat_send_max_attempts: int = Field(default=5, ge=1)
    # Sends of one message that may end without a recorded outcome (the worker died or lost
    # its claim mid-send) before the message is given up: 2 repeats an uncertain send once.
    wechat_send_max_unconfirmed: int = Field(default=2, ge=1)

    # Dual-post contributions (app/contributions): evidence files live in a local directory,
    # or with storage_backend "s3" in a bucket of an S3-compatible store (AWS S3, MinIO,
    # Aliyun OSS, …; app/integrations/storage.py).
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path = Path("./var/uploads")
    s3_endpoint_url: str | None = None  # None: AWS S3 in s3_region
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    # Both or neither; neither: botocore's own chain (AWS_* variables, profile, instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""  # e.g. "quyu/evidence": object key = prefix/storage key
    # "path" for MinIO without wildcard DNS; "virtual" for Aliyun OSS.
    s3_addressing_style: Literal["auto", "virtual", "path"] = "auto"
    contribution_max_age_days: int = Field(default=90, ge=1, le=3660)
    # Attendance (app/activities/attendance.py): a check-in received more than this long
    # after its scan, or this long after the activity ended, waits for an officer to confirm.
    attendance_late_after_seconds: int = Field(default=300, ge=0, le=86400)
    attendance_end_grace_seconds: int = Field(default=300, ge=0, le=86400)

    # The largest request body other than an upload (JSON, forms), in bytes; larger ones are
    # answered 413 before they are parsed (app/core/limits.py).  Uploads have their own limit.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    # HTTP exposure.  `Location` headers are built from the public base URL (scheme, host and
    # any path prefix a proxy adds), never from the request's Host header; requests naming a
    # host outside the allow-list are refused.  Both are required in production.
    public_base_url: str | None = None
    # Comma-separated host names; "*.example.org" covers the subdomains, "*" any host.
    allowed_hosts: Annotated[list[str] | None, NoDecode] = None
    # /docs, /redoc and /openapi.json: served unless turned off; off by default in production.
    api_docs: bool | None = None
    # /metrics: with a token, only to `Authorization: Bearer <token>`; without one, to anyone
    # outside production and to no one (404) in production.
    metrics_token: SecretStr | None = None

    idempotency_ttl_seconds: int = Field(default=86400, ge=60)
    # Anonymous keyed requests (only where an endpoint opts in: POST /auth/register) are
    # kept under this limit per client address; carrier NAT puts many people behind one.
    idempotency_anonymous_per_address: int = Field(default=120, ge=1)
    idempotency_anonymous_window_seconds: int = Field(default=3600, ge=1)
    log_level: str = "INFO"
    demo_password: str = "demo12345"  # noqa: S105  (documented demo credential)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [h for h in (part.strip() for part in value.split(",")) if h]
        if isinstance(value, list):
            return [str(h).strip().lower() for h in value if str(h).strip()] or None
        return value

    @field_validator("public_base_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL, e.g. https://quyu.example.org")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.env != "production":
            return self
        problems: list[str] = []
        if self.public_base_url is None:
            problems.append("QUYU_PUBLIC_BASE_URL must name the public address of the API")
        if not self.allowed_hosts:
            problems.append("QUYU_ALLOWED_HOSTS must list the host names the API answers to")
        if self.metrics_token is not None and _is_weak(self.metrics_token.get_secret_value()):
            problems.append("QUYU_METRICS_TOKEN must be a random value of at least 32 bytes")
        if self.jwt_algorithm == "HS256":
            if self.jwt_secret is None or _is_weak(self.jwt_secret.get_secret_value()):
                problems.append(
                    "QUYU_JWT_SECRET must be set to a random value of at least 32 bytes"
                )
        elif self.jwt_private_key_file is None or self.jwt_public_key_file is None:
            problems.append(
                "QUYU_JWT_PRIVATE_KEY_FILE and QUYU_JWT_PUBLIC_KEY_FILE are required for "
                f"{self.jwt_algorithm}"
            )
        for name in ("field_encryption_key", "blind_index_key"):
            value = getattr(self, name)
            if value is None or not _is_key(value.get_secret_value()):
                problems.append(f"QUYU_{name.upper()} must be a base64-encoded 32-byte key")
        if self.storage_backend == "s3":
            if not self.s3_bucket:
                problems.append("QUYU_S3_BUCKET is required with QUYU_STORAGE_BACKEND=s3")
            if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
                problems.append("QUYU_S3_ACCESS_KEY_ID and QUYU_S3_SECRET_ACCESS_KEY go together")
        if problems:
            raise ConfigError("Refusing to start in production: " + "; ".join(problems) + ".")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        """Where clients reach the API (no trailing slash): what `Location` headers start with."""
        return (self.public_base_url or DEV_BASE_URL).rstrip("/")

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host names requests may name (lower case, patterns allowed)."""
        return tuple(self.allowed_hosts) if self.allowed_hosts else DEV_ALLOWED_HOSTS

    @property
    def docs_served(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.env != "production"

    def ensure_dev_secrets(self) -> None:
        """Fill missing secrets from (or into) the git-ignored local secrets file."""
        if self.env == "production":
            return
        missing = [
            name
            for name in ("jwt_secret", "field_encryption_key", "blind_index_key")
            if getattr(self, name) is None
        ]
        if not missing:
            return
        stored: dict[str, str] = {}
        if self.secrets_file.exists():
            stored = json.loads(self.secrets_file.read_text(encoding="utf-8"))
        changed = False
        for name in missing:
            if name not in stored:
                stored[name] = (
                    secrets.token_urlsafe(48)
                    if name == "jwt_secret"
                    else base64.b64encode(secrets.token_bytes(32)).decode()
                )
                changed = True
            setattr(self, name, SecretStr(stored[name]))
        if changed:
            self.secrets_file.write_text(json.dumps(stored, indent=2), encoding="utf-8")
            os.chmod(self.secrets_file, 0o600)


def _is_weak(value: str) -> bool:
    return len(value.encode()) < MIN_SECRET_BYTES or value.lower() in WEAK_SECRETS


def _is_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except ValueError:
        return False


def decode_key(value: SecretStr | None) -> bytes:
    if value is None:
        raise ConfigError("key not configured")
    return base64.b64decode(value.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.ensure_dev_secrets()
    return settings
