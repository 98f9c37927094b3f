"""Hooks of the kit tests."""

from __future__ import annotations

import sys

import pytest


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every pytest-xdist worker imports test_fuzz.py, and importing it starts the fuzzed app's
    lifespan; the worker that runs the module ends it (`_fuzzed_lifespan`), any other ends it
    here rather than leave it to the garbage collector at exit."""
    fuzz = sys.modules.get("tests.kit.test_fuzz")
    if fuzz is not None:
        fuzz.fuzzed.close()
