"""Rotating attendance codes: HMAC of the activity and a 30-second window.

The key is derived (HKDF-SHA256) from the blind-index key with a purpose label of its own,
so no extra secret has to be configured and no other use of that key can produce a code.
A code is 8 characters of RFC 4648 base32 (40 bits): short enough for a QR code and for
typing, far too many to guess within the minute it is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

from app.core.crypto import derive_key

WINDOW_SECONDS = 30
CODE_LENGTH = 8
_PURPOSE = b"quyu/activities/attendance-code/v1"
# What people mistype on a phone keyboard; none of 0, 1 and 8 is a base32 digit.
_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})


def _key() -> bytes:
    return derive_key(_PURPOSE)


def window_of(moment: datetime) -> int:
    return int(moment.timestamp()) // WINDOW_SECONDS


def window_end(window: int) -> datetime:
    return datetime.fromtimestamp((window + 1) * WINDOW_SECONDS, UTC)


def code_for(activity_id: uuid.UUID, window: int) -> str:
    message = activity_id.bytes + window.to_bytes(8, "big", signed=True)
    digest = hmac.new(_key(), message, hashlib.sha256).digest()
    return base64.b32encode(digest[:5]).decode()


def normalize(code: str) -> str:
    return code.strip().replace(" ", "").replace("-", "").upper().translate(_LOOKALIKES)


def verify(activity_id: uuid.UUID, code: str, moment: datetime) -> bool:
    """True when `code` is the code of `moment`'s window or of the one before it."""
    given = normalize(code)
    if len(given) != CODE_LENGTH:
        return False
    current = window_of(moment)
    matched = False
    for window in (current, current - 1):
        # Compare against both windows, always, in constant time.
        matched |= hmac.compare_digest(given, code_for(activity_id, window))
    return matched
