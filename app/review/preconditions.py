"""`If-Match` on decisions: the officer decides the record as it was read, or not at all.

A reviewed record's ETag is made of row versions (`Reviewable.etag`, e.g. a contribution's
`version`; a check-in's version and its member's profile version), written `"3"` or `"3.7"`.
Every UPDATE of those rows adds one to their version, so every edit makes a new ETag.  The
officer reads it (the `etag` of a queue item) and sends it back as `If-Match`; the decision's
conditional UPDATE then carries `AND version = 3 …`, so that an edit committed between the read
and the decision makes the decision match nothing: 412 `precondition_failed` (a read-then-
compare would let an edit slip in between).

`If-Match: *` asks only that the record exists; no `If-Match` at all decides the record as it
is.  Strong comparison (RFC 9110 §13.1.1): a weak or malformed tag matches nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Final

from pydantic import Field, StringConstraints, ValidationInfo
from sqlalchemy import ColumnElement, SQLColumnExpression, and_, false, or_, true

from app.core.errors import AppError
from app.core.i18n import text

ANY: Final = "*"
"""`If-Match: *`: any current version."""

Versions = tuple[int, ...]
IfMatch = Sequence[Versions] | str
"""What an `If-Match` asks: `ANY`, or the versions of the tags it lists (empty: none can
match, e.g. only weak or foreign tags)."""

_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')
_VERSIONS = re.compile(r"^[0-9]{1,18}(?:\.[0-9]{1,18})*$")


ETagValue = Annotated[
    str,
    StringConstraints(max_length=100, pattern=r'^(\*|(W/)?"[!#-~]{0,90}")$'),
    Field(description='An entity tag as read (e.g. `"3"`, quotes included), or `*`'),
]
"""One entity tag in a request body (a batch's `if_match`)."""

IF_MATCH_DESCRIPTION = (
    "The record's ETag as read (the `etag` of its queue item): the decision is made only if "
    "the record (and, for a check-in, its member's profile) has not changed since, else 412 "
    "`precondition_failed`.  Without it the record is decided as it is."
)


class PreconditionFailed(AppError):
    """The record changed since the officer read it (its ETag is not the `If-Match`)."""

    code = "precondition_failed"


def format_etag(versions: Sequence[int]) -> str:
    """The ETag of a record whose rows are at `versions` (quoted, as sent in headers)."""
    return '"' + ".".join(str(v) for v in versions) + '"'


def parse_if_match(header: str | None, parts: int) -> IfMatch | None:
    """An `If-Match` header value as the versions it accepts for a kind whose ETag has
    `parts` numbers; None without a header."""
    if header is None:
        return None
    if header.strip() == ANY:
        return ANY
    accepted: list[Versions] = []
    for weak, opaque in _TAG.findall(header):
        if weak or not _VERSIONS.match(opaque):
            continue
        versions = tuple(int(v) for v in opaque.split("."))
        if len(versions) == parts:
            accepted.append(versions)
    return accepted


def matches(columns: Sequence[SQLColumnExpression[int]], wanted: IfMatch) -> ColumnElement[bool]:
    """SQL: the record's current versions are among those `wanted`."""
    if isinstance(wanted, str):
        return true()
    if not wanted:
        return false()
    return or_(*(and_(*(c == v for c, v in zip(columns, tag, strict=True))) for tag in wanted))


def holds(current: Versions, wanted: IfMatch) -> bool:
    """The same test in Python, to explain afterwards why a record was not decided."""
    return isinstance(wanted, str) or current in wanted


def condition(
    id_column: SQLColumnExpression[uuid.UUID],
    columns: Sequence[SQLColumnExpression[int]],
    ids: Sequence[uuid.UUID],
    wanted: Mapping[uuid.UUID, IfMatch],
) -> ColumnElement[bool]:
    """The WHERE part of a decision over `ids`: every id without a precondition, and each id
    with one only at the versions it names."""
    free = [i for i in ids if i not in wanted]
    clauses: list[ColumnElement[bool]] = [id_column.in_(free)] if free else []
    clauses += [and_(id_column == i, matches(columns, w)) for i, w in wanted.items()]
    return or_(*clauses) if clauses else false()


def if_match_among_ids(
    cls: type, value: dict[uuid.UUID, str] | None, info: ValidationInfo
) -> dict[uuid.UUID, str] | None:
    """A batch decision's `if_match` names only ids of its `ids` (declared before it): a rule
    between two fields that JSON Schema cannot state.  Used as
    `field_validator("if_match")(if_match_among_ids)`."""
    if value and not set(value) <= set(info.data.get("ids") or ()):
        raise ValueError(text("if_match 只能包含 ids 中的 ID", "if_match keys must be in ids"))
    return value
