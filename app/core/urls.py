"""Absolute URLs for clients (`Location` headers): the configured public base URL and the
route's path, never the request's `Host` header, which the client chooses."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from app.config import Settings


def public_url(settings: Settings, request: Request, name: str, **path_params: Any) -> str:
    """`Settings.base_url` followed by the path of the route called `name`."""
    path = request.app.url_path_for(name, **{k: str(v) for k, v in path_params.items()})
    return settings.base_url + str(path)
