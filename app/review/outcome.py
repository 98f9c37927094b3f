"""What became of each id an officer decided.

A decision is one conditional UPDATE over the ids: pending, in the officer's scope, not the
officer's own.  It decides some; for the others, the state they are in now says why not —
unknown or out of scope (`not_found`), the officer's own and still pending
(`review_own_forbidden`), changed since the officer read it, against an `If-Match`
(`precondition_failed`), anything else not pending (`invalid_transition`, also the loser of a
race).  A kind's own limit (`Reviewable.admit`) may refuse some with a problem of its own.
One answer for a single decision (raised) and for a batch (a verdict per id).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from pydantic import BaseModel

from app.core.errors import AppError, InvalidTransition, NotFound, ReviewOwnForbidden
from app.review.preconditions import PreconditionFailed

# The state every reviewable record waits in.
PENDING = "pending"


class Verdict(NamedTuple):
    """One id of a batch: decided or not, its state now (when the officer may see it) and,
    when not decided, the problem code saying why."""

    id: uuid.UUID
    ok: bool
    status: str | None
    code: str | None


ResponseT = TypeVar("ResponseT", bound=BaseModel)


def batch_response(model: type[ResponseT], verdicts: Sequence[Verdict]) -> ResponseT:
    """A kind's batch answer (`{"results": [...]}`) from its verdicts; the kind's schema turns
    each state into its own enum."""
    return model.model_validate({"results": [v._asdict() for v in verdicts]})


@dataclass(frozen=True)
class Outcome:
    to_state: str
    actor_id: uuid.UUID
    decided: frozenset[uuid.UUID]
    # (status, owner) of the ids in scope that were not decided.
    others: dict[uuid.UUID, tuple[str, uuid.UUID]]
    # Those of them whose `If-Match` no longer holds.
    stale: frozenset[uuid.UUID] = frozenset()
    # Ids the kind's own limit refused (`Reviewable.admit`), with the problem to answer.
    refused: Mapping[uuid.UUID, AppError] = field(default_factory=dict)

    def refusal(self, object_id: uuid.UUID) -> AppError | None:
        """Why `object_id` was not decided; None when it was."""
        if object_id in self.decided:
            return None
        if object_id in self.refused:
            return self.refused[object_id]
        state = self.others.get(object_id)
        if state is None:
            return NotFound()
        status, owner = state
        if owner == self.actor_id and status == PENDING:
            return ReviewOwnForbidden()
        if object_id in self.stale:
            return PreconditionFailed()
        return InvalidTransition()

    def raise_unless_decided(self, object_id: uuid.UUID) -> None:
        refusal = self.refusal(object_id)
        if refusal is not None:
            raise refusal

    def state_of(self, object_id: uuid.UUID) -> str | None:
        """The state after the call, for the ids the officer may see."""
        if object_id in self.decided:
            return self.to_state
        state = self.others.get(object_id)
        return state[0] if state is not None else None

    def code_of(self, object_id: uuid.UUID) -> str | None:
        refusal = self.refusal(object_id)
        return refusal.code if refusal is not None else None

    def verdicts(self, ids: Sequence[uuid.UUID]) -> list[Verdict]:
        """A verdict per id, in the order given."""
        return [Verdict(i, i in self.decided, self.state_of(i), self.code_of(i)) for i in ids]
