"""Who may read /metrics (see `Settings.metrics_token`)."""

from __future__ import annotations

import hmac

from app.config import Settings
from app.core.errors import NotFound, Unauthorized


def check_metrics_reader(settings: Settings, authorization: str | None) -> None:
    """With a metrics token, only `Authorization: Bearer <token>` may read (401 otherwise);
    without one, anyone outside production and no one in production (404: not served)."""
    token = settings.metrics_token
    if token is None:
        if settings.env == "production":
            raise NotFound()
        return
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized()
