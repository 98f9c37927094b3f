"""The description of one kind of record an officer reviews (a check-in, a contribution, and
later a venue booking or a roster match): which table and columns a decision reads and writes,
which decisions exist and the state each leads to, which need a reason, how its events are
named and how the answer to a single decision is loaded.

The review mechanism (`app.review.decisions`) knows nothing else about a kind; what is
particular to one stays in its own description: a contribution's third decision, `return`, is
one more entry of `decisions`; work that must happen with a decision goes into `on_decided`;
a limit a decision must keep (a contribution's hours per day) into `admit`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, SQLColumnExpression, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.authz import Scope
from app.core.errors import AppError
from app.models.organization import Organization
from app.review.outcome import PENDING

ItemT = TypeVar("ItemT")


class Changed(NamedTuple):
    """A record a conditional UPDATE changed: what its audit entry and event need."""

    id: uuid.UUID
    org_id: uuid.UUID
    owner_id: uuid.UUID


OnDecided = Callable[[AsyncSession, str, Sequence[Changed]], Awaitable[None]]
"""A kind's own work after records were decided into a state, in the same transaction."""

Admit = Callable[[AsyncSession, str, Sequence[uuid.UUID]], Awaitable[Mapping[uuid.UUID, AppError]]]
"""A kind's own limit on a decision into a state: given the records about to be decided (pending,
decidable by the officer, their rows locked until commit, in the order given), the ones it
refuses and why.  What it reads must be guarded by locks every other writer takes too."""


@dataclass(frozen=True, kw_only=True)
class Reviewable(Generic[ItemT]):
    """One kind of reviewable record.  `ItemT` is the officer's view of one record, the
    answer to a single decision."""

    # The audit log's object type; events are `<object_type>.<state>` and their payload
    # names the record `<object_type>_id`.
    object_type: str
    table: type[Any]
    id: InstrumentedAttribute[uuid.UUID]
    status: InstrumentedAttribute[str]
    # Who the record belongs to: an officer never decides their own.
    owner: InstrumentedAttribute[uuid.UUID]
    # The organization the record is filed with: officers of it and above decide.
    org: InstrumentedAttribute[uuid.UUID]
    decided_at: InstrumentedAttribute[datetime | None]
    decided_by: InstrumentedAttribute[uuid.UUID | None]
    decision_comment: InstrumentedAttribute[str | None]
    updated_at: InstrumentedAttribute[datetime]
    # What the record's ETag is made of: row versions that every edit of it raises (its own
    # `version`, and for instance its member's profile version, as a correlated subquery).
    # A decision's `If-Match` becomes a condition on them (app/review/preconditions.py).
    versions: Sequence[SQLColumnExpression[int]]
    # Decision name → the state it moves a pending record into.
    decisions: Mapping[str, str]
    # Decisions that need a comment (the reason shown to the member), and the message
    # (zh-CN, English) of the 422 when it is missing.
    reason_required: frozenset[str] = frozenset()
    reason_missing: tuple[str, str] = ("须填写理由", "A reason is required")
    # The officer's view of one record, after a single decision.
    load: Callable[[AsyncSession, uuid.UUID], Awaitable[ItemT | None]]
    on_decided: OnDecided | None = None
    admit: Admit | None = None

    def topic(self, to_state: str) -> str:
        """The audit action and outbox topic of a change into `to_state`: a record entering
        the queue is `submitted`, any other state is named as such."""
        return f"{self.object_type}.{'submitted' if to_state == PENDING else to_state}"

    def in_scope(self, scope: Scope) -> ColumnElement[bool]:
        """Records filed with organizations the scope covers (one indexed prefix query on the
        organizations' paths)."""
        return self.org.in_(select(Organization.id).where(scope.clause()))

    def decidable_by(self, actor_id: uuid.UUID, scope: Scope) -> list[ColumnElement[bool]]:
        """What a decision requires besides the record being pending: within the officer's
        scope and not the officer's own.  Part of the decision's conditional UPDATE itself,
        so that no pre-check can be raced past."""
        return [self.in_scope(scope), self.owner != actor_id]
