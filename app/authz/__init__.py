"""The only place that decides who may act where.

- `principal`: who is calling (a person or a city client);
- `tree`: the one subtree predicate of the organization tree;
- `scope`: the subtrees a caller may act on and the 404/403 decisions that follow;
- `activities`: who may see an activity (its visibility to members) and who may run it;
- `guards`: FastAPI dependencies that routers declare (the only HTTP-facing module here:
  services import from this package, never from `guards`).

Outsiders get 404 for objects they cannot see, so that ids do not leak what exists.
"""

from __future__ import annotations

from app.authz.principal import Principal
from app.authz.scope import (
    EVERYTHING,
    NOTHING,
    ORGS_READ,
    Scope,
    client_scope,
    directory_scope,
    load_org_in_scope,
    officer_scope,
    officer_scope_required,
    require_covers,
    require_member,
    require_officer_above,
    require_officer_of,
    require_owner_or_officer,
    require_scope,
    require_whole_tree,
    scope_for,
    subtree,
)
from app.authz.tree import ancestor_ids, in_subtree, path_within

__all__ = [
    "EVERYTHING",
    "NOTHING",
    "ORGS_READ",
    "Principal",
    "Scope",
    "ancestor_ids",
    "client_scope",
    "directory_scope",
    "in_subtree",
    "load_org_in_scope",
    "officer_scope",
    "officer_scope_required",
    "path_within",
    "require_covers",
    "require_member",
    "require_officer_above",
    "require_officer_of",
    "require_owner_or_officer",
    "require_scope",
    "require_whole_tree",
    "scope_for",
    "subtree",
]
