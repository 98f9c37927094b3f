"""The review mechanism: an officer decides one record or a batch.

Every change of state is one conditional UPDATE (… WHERE id IN (…) AND status = :from …
RETURNING), so that of two concurrent writers exactly one wins: the second re-checks the
condition after the first commits and matches nothing.  A decision adds to that condition the
officer's scope and "not the officer's own" (403 `review_own_forbidden`), and, when the officer
sent one, the `If-Match` as a condition on the record's versions (412 `precondition_failed`,
app/review/preconditions.py), so no pre-check can be raced past.  A kind with a limit of its
own (`Reviewable.admit`, e.g. a contribution's hours per day) first locks the rows the decision
would change, lets the limit refuse some, and decides the rest.  Each changed record gets an
audit entry and an outbox event in the same transaction; nothing here commits.

The owner's own moves on a record (withdraw, leave) go through the same `transition` and
`record_change`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.authz import Scope
from app.core import clock
from app.core.audit import audit
from app.core.errors import AppError, ValidationFailed
from app.core.i18n import text
from app.core.outbox import record_event
from app.review import preconditions
from app.review.outcome import PENDING, Outcome, Verdict
from app.review.preconditions import IfMatch
from app.review.reviewable import Changed, Reviewable

ItemT = TypeVar("ItemT")


async def transition(
    session: AsyncSession,
    kind: Reviewable[Any],
    ids: Sequence[uuid.UUID],
    *,
    from_state: str,
    to_state: str,
    where: Iterable[ColumnElement[bool]],
    values: Mapping[InstrumentedAttribute[Any], Any],
) -> list[Changed]:
    """One conditional UPDATE of those of `ids` in `from_state` matching `where` into
    `to_state` (with `values`); the records it changed."""
    stmt = (
        update(kind.table)
        .where(kind.id.in_(ids), kind.status == from_state, *where)
        .values({kind.status: to_state, **values})
        .returning(kind.id, kind.org, kind.owner)
        .execution_options(synchronize_session=False)
    )
    return [Changed(*row) for row in await session.execute(stmt)]


async def states(
    session: AsyncSession,
    kind: Reviewable[Any],
    ids: Sequence[uuid.UUID],
    *where: ColumnElement[bool],
) -> dict[uuid.UUID, tuple[str, uuid.UUID]]:
    """(state, owner) of those of `ids` that match `where` (ownership or scope)."""
    rows = await session.execute(
        select(kind.id, kind.status, kind.owner).where(kind.id.in_(ids), *where)
    )
    return {row[0]: (row[1], row[2]) for row in rows}


async def _standing(
    session: AsyncSession, kind: Reviewable[Any], ids: Sequence[uuid.UUID], scope: Scope
) -> dict[uuid.UUID, tuple[str, uuid.UUID, tuple[int, ...]]]:
    """(state, owner, versions) of those of `ids` in `scope`: why they were not decided."""
    rows = await session.execute(
        select(kind.id, kind.status, kind.owner, *kind.versions).where(
            kind.id.in_(ids), kind.in_scope(scope)
        )
    )
    return {row[0]: (row[1], row[2], tuple(row[3:])) for row in rows}


def record_change(
    session: AsyncSession,
    kind: Reviewable[Any],
    record: Changed,
    *,
    actor_id: uuid.UUID,
    from_state: str | None,
    to_state: str,
    comment: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The audit entry and the outbox event of one change (ids and states, no personal data
    in the event: a worker reads what it needs)."""
    topic = kind.topic(to_state)
    audit(
        session,
        action=topic,
        object_type=kind.object_type,
        object_id=record.id,
        org_id=record.org_id,
        actor_id=actor_id,
        from_state=from_state,
        to_state=to_state,
        comment=comment,
    )
    payload: dict[str, Any] = {
        f"{kind.object_type}_id": str(record.id),
        "org_id": str(record.org_id),
        "user_id": str(record.owner_id),
        "actor_id": str(actor_id),
        "from_state": from_state,
        "to_state": to_state,
    }
    payload.update(extra or {})
    record_event(session, topic, payload, aggregate_id=str(record.id))


def _require_reason(kind: Reviewable[Any], decision: str, comment: str | None) -> None:
    if decision in kind.reason_required and not comment:
        raise ValidationFailed("comment", text(*kind.reason_missing))


async def _decide(
    session: AsyncSession,
    kind: Reviewable[Any],
    actor_id: uuid.UUID,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    decision: str,
    comment: str | None,
    if_match: Mapping[uuid.UUID, IfMatch],
) -> Outcome:
    """Decide every pending one of `ids` within `scope`, not the actor's own and still at the
    versions its `If-Match` names (if any), with one UPDATE; the outcome knows, for the others
    visible in scope, why they were not."""
    _require_reason(kind, decision, comment)
    to_state = kind.decisions[decision]
    now = clock.now()
    unchanged = preconditions.condition(kind.id, kind.versions, ids, if_match)
    refused: Mapping[uuid.UUID, AppError] = {}
    if kind.admit is not None:
        decidable = await _lock_decidable(session, kind, actor_id, scope, ids, unchanged)
        refused = await kind.admit(session, to_state, decidable)
    changed = await transition(
        session,
        kind,
        [i for i in ids if i not in refused],
        from_state=PENDING,
        to_state=to_state,
        where=[*kind.decidable_by(actor_id, scope), unchanged],
        values={
            kind.decided_at: now,
            kind.decided_by: actor_id,
            kind.decision_comment: comment,
            kind.updated_at: now,
        },
    )
    for record in changed:
        record_change(
            session,
            kind,
            record,
            actor_id=actor_id,
            from_state=PENDING,
            to_state=to_state,
            comment=comment,
        )
    if changed and kind.on_decided is not None:
        await kind.on_decided(session, to_state, changed)
    decided = frozenset(record.id for record in changed)
    rest = [i for i in ids if i not in decided]
    standing = await _standing(session, kind, rest, scope) if rest else {}
    stale = frozenset(
        i
        for i, (_, _, versions) in standing.items()
        if i in if_match and not preconditions.holds(versions, if_match[i])
    )
    others = {i: (status, owner) for i, (status, owner, _) in standing.items()}
    return Outcome(to_state, actor_id, decided, others, stale, refused)


async def _lock_decidable(
    session: AsyncSession,
    kind: Reviewable[Any],
    actor_id: uuid.UUID,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    unchanged: ColumnElement[bool],
) -> list[uuid.UUID]:
    """Those of `ids` a decision would change (pending, decidable by the actor, at the
    versions an `If-Match` names), their rows locked until commit (in id order, so that two
    batches never wait for each other crosswise), in the order given.  An owner's edit waits
    for the decision and then finds the record decided."""
    stmt = (
        select(kind.id)
        .where(
            kind.id.in_(ids),
            kind.status == PENDING,
            *kind.decidable_by(actor_id, scope),
            unchanged,
        )
        .order_by(kind.id)
        .with_for_update(of=kind.table)
    )
    found = set((await session.execute(stmt)).scalars())
    return [i for i in ids if i in found]


async def decide_one(
    session: AsyncSession,
    kind: Reviewable[ItemT],
    *,
    actor_id: uuid.UUID,
    scope: Scope,
    object_id: uuid.UUID,
    decision: str,
    comment: str | None,
    if_match: str | None = None,
) -> ItemT:
    """Decide one pending record of the officer's scope; the officer's view of it after.

    Outside the scope (or unknown): 404; the officer's own, pending: 403
    `review_own_forbidden`; changed since the `If-Match` ETag was read (also: decided
    meanwhile): 412 `precondition_failed`; not pending (also: lost a race): 409
    `invalid_transition`; a decision that needs a reason without one: 422."""
    wanted = preconditions.parse_if_match(if_match, len(kind.versions))
    conditions = {} if wanted is None else {object_id: wanted}
    outcome = await _decide(
        session, kind, actor_id, scope, [object_id], decision, comment, conditions
    )
    outcome.raise_unless_decided(object_id)
    item = await kind.load(session, object_id)
    assert item is not None, "decided in this transaction"
    return item


async def decide_batch(
    session: AsyncSession,
    kind: Reviewable[Any],
    *,
    actor_id: uuid.UUID,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    decision: str,
    comment: str | None,
    if_match: Mapping[uuid.UUID, str] | None = None,
) -> list[Verdict]:
    """A batch: a verdict per id, in the order given; one bad id does not sink the others
    (a decision that needs a reason without one refuses the whole batch: 422).  `if_match`
    maps ids to the ETag each record had when the officer read it: a record changed since
    gets `precondition_failed`."""
    parts = len(kind.versions)
    conditions = {
        i: wanted
        for i, tag in (if_match or {}).items()
        if (wanted := preconditions.parse_if_match(tag, parts)) is not None
    }
    outcome = await _decide(session, kind, actor_id, scope, ids, decision, comment, conditions)
    return outcome.verdicts(ids)
