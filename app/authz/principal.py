"""Who is calling: a signed-in person (with their session) or a city-system client.

Pure data, free of the HTTP layer: routers obtain a `Principal` from the guards in
`app.authz.guards`, services receive it (or the person behind it) as their actor.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.models.auth import ApiClient
from app.models.user import User


@dataclass(frozen=True)
class Principal:
    """A member (with their session) or a city-system client with its granted scopes."""

    user: User | None = None
    session_id: uuid.UUID | None = None
    client: ApiClient | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def idempotency_caller(self) -> str:
        """Whose kept `Idempotency-Key` answers this caller may replay: the session of a
        person (signed out, it replays nothing) or the city client."""
        if self.client is not None:
            return f"client:{self.client.client_id}"
        return f"session:{self.session_id}"

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin

    @property
    def person(self) -> User:
        """The signed-in person behind a member guard (narrows the type)."""
        assert self.user is not None, "use behind the member guard"
        return self.user

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.user.id if self.user is not None else None
