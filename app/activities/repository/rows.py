"""Typed rows: statement results read into named tuples by column label."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Row, Select
from sqlalchemy.engine import CursorResult, Result

R = TypeVar("R")

# Statements of many columns, built once and read into a named tuple by label.
AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"


def typed(into: Callable[..., R], rows: Iterable[Row[Any]]) -> list[R]:
    """Each row as `into(**columns)`: a label the tuple does not name, or a field the statement
    does not select, is a TypeError."""
    return [into(**row._mapping) for row in rows]


def typed_one(into: Callable[..., R], result: Result[Any]) -> R | None:
    """The one row of `result` as `into(**columns)`, or None (more than one is an error)."""
    row = result.one_or_none()
    return None if row is None else into(**row._mapping)


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
