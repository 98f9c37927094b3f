"""Process set-up from one `Settings` object: the application factory and the command-line
entry point call `install(settings)` with the settings they were given, so that the few
process-wide holders (field-encryption keys, token keys) obey them."""

from __future__ import annotations

from app.config import Settings
from app.core import crypto, tokens


def install(settings: Settings) -> None:
    crypto.configure(settings)
    tokens.configure(settings)
