"""The organization tree's one subtree predicate.

Every organization carries a materialized `path` ("/<id>/<id>/.../"), so "this organization
and everything under it" is a prefix test: `path LIKE '<prefix>%'`, served by the path index on
both databases.  Every query and every in-memory check of subtree membership goes through the
two functions below.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, String, literal_column

from app.models.organization import Organization


def path_within(path: str, prefix: str) -> bool:
    """True when the organization at `path` is the one at `prefix` or below it."""
    return path.startswith(prefix)


def in_subtree(
    prefix: str, column: ColumnElement[str] | None = None, *, literal: bool = False
) -> ColumnElement[bool]:
    """WHERE clause: organizations (by their path `column`) at or below `prefix`.

    With `literal=True` the prefix is written into the SQL rather than bound.  Statistics
    over a large subtree want that: with a bound prefix PostgreSQL may switch, after five
    executions of a prepared statement, to a generic plan that cannot know how much of the
    tree the prefix selects.  Paths are made of hex ids and slashes only, so the literal
    cannot carry a quote or a LIKE wildcard (checked all the same).
    """
    col = column if column is not None else Organization.path
    if literal:
        if not all(c in "0123456789abcdef/" for c in prefix):
            raise ValueError("not an organization path")
        return col.like(literal_column(f"'{prefix}%'", String))
    return col.startswith(prefix, autoescape=True)


def ancestor_ids(path: str) -> list[uuid.UUID]:
    """The ids along `path`, root first (the organization itself last)."""
    return [uuid.UUID(part) for part in path.strip("/").split("/") if part]
