"""Prometheus metrics: requests and latency per route template.

With several worker processes, `PROMETHEUS_MULTIPROC_DIR` is set by `quyu serve` and every
process writes its samples there; `/metrics` aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("quyu_http_requests_total", "HTTP requests", ["method", "route", "status"])
# Keyed POSTs by what became of the key (app/idempotency.py): stored, replayed, replayed_twin
# (a concurrent duplicate answered the winner's answer), key_reused, key_invalid, in_flight.
IDEMPOTENCY = Counter(
    "quyu_idempotency_total", "Idempotency-Key outcomes", ["method", "route", "outcome"]
)
LATENCY = Histogram(
    "quyu_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
