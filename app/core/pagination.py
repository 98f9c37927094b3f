"""Cursor (keyset) pagination: `?limit=&cursor=` in, `{items, next_cursor}` out.

A cursor is the opaque, base64url-encoded sort key of the last item of a page.  Orders are
stable because every sort key ends with the primary key.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import AppError, register_codes
from app.core.text import has_refused

# What `encode_cursor` writes: base64url without padding.
CURSOR_PATTERN = "^[A-Za-z0-9_-]+$"

register_codes({"invalid_cursor": (422, "分页游标无效", "The cursor is not valid")})

T = TypeVar("T")
# Any statement of any columns; `where`, `order_by` and `limit` give back the same type.
S = TypeVar("S", bound="Select[*tuple[Any, ...]]")
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"cannot put {type(value).__name__} in a cursor")


def _decode_value(raw: Any, kind: type) -> Any:
    """One decoded sort key value, checked against the type of its key: a cursor that decodes
    but holds something else (another type, a naive or out-of-range time) is refused here,
    not by the database."""
    if kind is datetime:
        if not (isinstance(raw, dict) and set(raw) == {"dt"} and isinstance(raw["dt"], str)):
            raise ValueError("expected a time")
        value = datetime.fromisoformat(raw["dt"])
        if value.tzinfo is None:
            raise ValueError("naive time")
        return value.astimezone(UTC)  # OverflowError at the edges of the calendar
    if kind is uuid.UUID:
        if not (isinstance(raw, dict) and set(raw) == {"u"} and isinstance(raw["u"], str)):
            raise ValueError("expected an id")
        return uuid.UUID(raw["u"])
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValueError("expected a number")
        return float(raw)
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError("expected an integer")
        return raw
    if kind is str:
        if not isinstance(raw, str) or has_refused(raw):
            raise ValueError("expected a string")
        return raw
    raise TypeError(f"no cursor values of type {kind.__name__}")


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_encode_value(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: Sequence[type]) -> list[Any]:
    """The sort key in `cursor`, one value per type of `shape` (the types of the list's keys,
    in order), or 422 `invalid_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(raw, list) or len(raw) != len(shape):
            raise ValueError("width")
        return [_decode_value(v, kind) for v, kind in zip(raw, shape, strict=True)]
    except (ValueError, OverflowError, UnicodeDecodeError, RecursionError) as exc:
        raise AppError("invalid_cursor") from exc


def key_types(keys: Sequence[Any]) -> list[type]:
    """The Python types of sort key columns, as `decode_cursor` takes them (a type decorator's
    is that of the type it decorates)."""
    types: list[type] = []
    for key in keys:
        column_type = getattr(key.type, "impl_instance", key.type)
        types.append(column_type.python_type)
    return types


def keyset(
    stmt: S,
    keys: Sequence[InstrumentedAttribute[Any]],
    params: PageParams,
    *,
    descending: bool = False,
) -> S:
    """Order by `keys`, start after the cursor, fetch limit + 1 rows to know if more exist.

    The comparison is spelled out as (a > x) OR (a = x AND b > y) ... rather than a row-value
    comparison so that it works the same on SQLite and PostgreSQL and uses the index.
    """
    if params.cursor is not None:
        values = decode_cursor(params.cursor, key_types(keys))
        clauses = []
        for i, key in enumerate(keys):
            prior = [keys[j] == values[j] for j in range(i)]
            step = key < values[i] if descending else key > values[i]
            clauses.append(and_(*prior, step))
        stmt = stmt.where(or_(*clauses))
    order = [k.desc() if descending else k.asc() for k in keys]
    return stmt.order_by(*order).limit(params.limit + 1)


def page_of(rows: Sequence[T], params: PageParams, key_of: Any) -> tuple[list[T], str | None]:
    """Cut the extra row and make the next cursor from the last item's sort key."""
    items = list(rows[: params.limit])
    if len(rows) > params.limit and items:
        return items, encode_cursor(key_of(items[-1]))
    return items, None
