"""City-system clients (`api_clients`), which sign in with the client-credentials grant.

A client is made from the command line (`quyu create-client`) or by the demo loader.  Its
secret is shown once and kept only as a password hash; its scopes are stored space-separated,
sorted and without repeats; with an `org_id` it is bound to that organization's subtree.
"""

from __future__ import annotations

import uuid

import anyio

from app.config import Settings
from app.core.passwords import hash_password_sync
from app.core.tokens import new_opaque
from app.db.session import create_engine, create_sessionmaker, separate_transaction
from app.models.auth import ApiClient


def normalized_scopes(scopes: str) -> str:
    return " ".join(sorted(set(scopes.split())))


async def new_api_client(
    *,
    client_id: str,
    name: str,
    secret: str,
    scopes: str,
    org_id: uuid.UUID | None = None,
    row_id: uuid.UUID | None = None,
) -> ApiClient:
    """A client row (not yet added to a session); the secret is hashed off the event loop.
    `row_id`: a fixed primary key (the demo client's), otherwise a random one."""
    client = ApiClient(
        client_id=client_id,
        name=name,
        secret_hash=await anyio.to_thread.run_sync(hash_password_sync, secret),
        scopes=normalized_scopes(scopes),
        org_id=org_id,
    )
    if row_id is not None:
        client.id = row_id
    return client


async def create_client(settings: Settings, client_id: str, scopes: str, org_id: str | None) -> str:
    """`quyu create-client`: add a client named `client_id` and return its new secret.
    Raises IntegrityError when the name is taken or the organization does not exist."""
    engine = create_engine(settings)
    factory = create_sessionmaker(engine)
    secret = new_opaque(32)
    try:
        async with separate_transaction(
            factory, why="a command-line run has no request of its own"
        ) as session:
            session.add(
                await new_api_client(
                    client_id=client_id,
                    name=client_id,
                    secret=secret,
                    scopes=scopes,
                    org_id=uuid.UUID(org_id) if org_id else None,
                )
            )
    finally:
        await engine.dispose()
    return secret
