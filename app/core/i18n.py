"""Human text: zh-CN by default, English when the client asks for it."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal

Lang = Literal["zh-CN", "en"]

current_lang: ContextVar[Lang] = ContextVar("current_lang", default="zh-CN")


def negotiate(accept_language: str | None) -> Lang:
    """Pick zh-CN or en from an Accept-Language header (highest q wins, zh-CN on ties)."""
    if not accept_language:
        return "zh-CN"
    best: tuple[float, Lang] = (0.0, "zh-CN")
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        tag = tag.strip().lower()
        lang: Lang | None = (
            "en" if tag.startswith("en") else "zh-CN" if tag.startswith("zh") else None
        )
        if lang is not None and (q > best[0] or (q == best[0] and lang == "zh-CN")):
            best = (q, lang)
    return best[1]


def text(zh: str, en: str) -> str:
    return en if current_lang.get() == "en" else zh
