"""Hooks of the kit tests."""

from __future__ import annotations

import sys

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Schemathesis gives all the operations of one fuzz test the node id of the function, and
    pytest-xdist schedules by node id: it would run one operation per test and drop the rest.
    Each gets the id of its operation, as a parametrized test would; if a new pytest or
    Schemathesis breaks this, the ids are no longer unique and collection fails here."""
    fuzzed = [i for i in items if i.nodeid.startswith("tests/kit/test_fuzz.py::")]
    for item in fuzzed:
        name = item.name
        if name.endswith("]") and not item.nodeid.endswith("]"):
            item._id = item.id.with_params(name[name.index("[") + 1 : -1])
    ids = [item.nodeid for item in fuzzed]
    assert len(ids) == len(set(ids)), "fuzz tests share node ids: pytest-xdist would drop some"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every pytest-xdist worker imports test_fuzz.py, and importing it starts the fuzzed app's
    lifespan; the worker that runs the module ends it (`_fuzzed_lifespan`), any other ends it
    here rather than leave it to the garbage collector at exit."""
    fuzz = sys.modules.get("tests.kit.test_fuzz")
    if fuzz is not None:
        fuzz.fuzzed.close()
