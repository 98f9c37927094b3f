"""Officers' review: one mechanism for every kind of record an officer approves.

- `reviewable`: `Reviewable`, the description of one kind (check-ins, contributions, late
  attendance, …);
- `decisions`: decide one record or a batch with one conditional UPDATE, an audit entry and an
  outbox event per decided record (after the kind's own limit, `admit`, if it has one, with
  the decidable rows locked); the owner's own moves use the same `transition`;
- `outcome`: what became of each id (`Outcome`, a `Verdict` per id of a batch);
- `preconditions`: a record's ETag (its row versions) and the decision's `If-Match` made a
  condition of the decision's UPDATE (412 `precondition_failed` when the record changed).

Authorization is not decided here: callers pass the officer's resolved `Scope` (app.authz),
and a record outside it is simply not found.
"""

from __future__ import annotations

from app.review.decisions import (
    decide_batch,
    decide_one,
    record_change,
    states,
    transition,
)
from app.review.outcome import PENDING, Outcome, Verdict, batch_response
from app.review.preconditions import PreconditionFailed, format_etag
from app.review.reviewable import Admit, Changed, OnDecided, Reviewable

__all__ = [
    "PENDING",
    "Admit",
    "Changed",
    "OnDecided",
    "Outcome",
    "PreconditionFailed",
    "Reviewable",
    "Verdict",
    "batch_response",
    "decide_batch",
    "decide_one",
    "format_etag",
    "record_change",
    "states",
    "transition",
]
