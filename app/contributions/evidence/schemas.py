"""The shape of a piece of evidence that crosses HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class AttachmentRead(BaseModel):
    id: uuid.UUID
    content_type: str
    size: int
    sha256: str
    original_name: str | None
    created_at: datetime
