"""schemathesis against the service's own OpenAPI schema (a live server, bounded examples): no 5xx, with and
without a valid API key."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from .live_server import KEY, LiveServer  # noqa: E402

EXAMPLES = 20  # per operation and per key setting: bounded, ~1 minute in all


def test_no_server_errors(live_server: LiveServer) -> None:
    # (schemathesis.pytest.from_fixture does not run on this pytest; the operations are driven with hypothesis)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    failures: list[str] = []
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)  # the same cases on every run: CI stays reproducible
        def run(case) -> None:  # type: ignore[no-untyped-def]
            for headers in (None, {"Authorization": f"Bearer {KEY}"}):  # refused by auth, and reaching the handlers
                response = case.call(headers=headers, timeout=30)
                key = f"{case.method} {case.path}"
                calls[key] = calls.get(key, 0) + 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        run()
    assert len(calls) >= 12, calls  # every operation was exercised
    assert sum(calls.values()) > 200
    assert not failures, "\n".join(failures[:10])
