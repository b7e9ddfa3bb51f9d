"""The OpenAPI document of midrun's control API: it describes exactly the routes there are,
and a bounded schemathesis run against a live server (valid and invalid requests, on
unknown ids and on real ones) finds no server error."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from midrun.server import control
from midrun.server.openapi import document
from tests.server.conftest import LiveServer, make_config, start_server, txt2img

schemathesis = pytest.importorskip("schemathesis")

# Examples per operation, mode and choice of path parameters; the whole run stops sending
# after BUDGET_S. Raise both through the environment for a longer hunt.
EXAMPLES = int(os.environ.get("MIDRUN_FUZZ_EXAMPLES", "6"))
BUDGET_S = float(os.environ.get("MIDRUN_FUZZ_SECONDS", "50"))


def test_the_document_describes_every_control_route_and_nothing_else() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert described == {(method, path) for method, path, _ in control.ROUTES}
    for path, ops in doc["paths"].items():
        names = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        for operation in ops.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, path
            assert {"401", "403"} <= set(operation["responses"])


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No workers: queued jobs stay queued, nothing generates while requests fly."""
    server = start_server(make_config(tmp_path_factory.mktemp("fuzz"), workers=False))
    yield server
    server.stop()


def real_ids(live: LiveServer, workflow_id: str) -> dict[str, str]:
    """Real ids for the path parameters, so requests reach past the 404s: a fresh queued
    job (each operation gets its own: an abort must not end the others' chances)."""
    with live.client() as http:
        job_id = http.post(f"/api/workflows/{workflow_id}/execute").json()["id"]
        bp_id = http.post(f"/api/jobs/{job_id}/breakpoints", json={"node_id": "3"}).json()["id"]
        batch_id = http.post(f"/api/workflows/{workflow_id}/batch", json={"count": 2}).json()["id"]
    return {"job_id": job_id, "workflow_id": workflow_id, "bp_id": bp_id, "batch_id": batch_id}


def test_the_document_is_served(fuzzed: LiveServer) -> None:
    with fuzzed.client() as http:
        assert http.get("/api/openapi.json").json() == document()


def test_no_request_makes_a_server_error(fuzzed: LiveServer) -> None:
    """Passes over every operation: valid requests on unknown ids, on real ids, then
    invalid ones (each pass covers every operation before the next starts, so a slow
    machine that runs out of budget loses the later passes, not whole operations)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    with fuzzed.client() as http:
        schema = schemathesis.openapi.from_dict(http.get("/api/openapi.json").json())
        workflow = {"name": "fuzz", "workflow": txt2img(steps=2)}
        workflow_id = http.post("/api/workflows", json=workflow).json()["id"]
    operations = [result.ok() for result in schema.get_all_operations()]
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    calls = 0

    def check(case: Any) -> None:
        nonlocal calls
        if time.monotonic() > deadline:
            return
        calls += 1
        response = case.call(base_url=fuzzed.url, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])

    passes = [(GenerationMode.POSITIVE, False), (GenerationMode.POSITIVE, True),
              (GenerationMode.NEGATIVE, False), (GenerationMode.NEGATIVE, True)]  # fmt: skip
    for mode, with_ids in passes:
        for operation in operations:
            names = {p.name for p in operation.path_parameters}
            if (with_ids and not names) or time.monotonic() > deadline:
                continue
            fixed = {}
            if with_ids:
                fixed = {k: v for k, v in real_ids(fuzzed, workflow_id).items() if k in names}
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
            test = settings(max_examples=EXAMPLES, deadline=None, database=None,
                            phases=[Phase.generate], derandomize=True,
                            suppress_health_check=list(HealthCheck))(given(strategy)(check))
            try:
                test()
            except Unsatisfiable:
                pass  # nothing invalid to send (no body, string path parameters only)
            except (Exception, BaseExceptionGroup) as exc:  # one report for all failures
                failures.append(f"{operation.label} ({mode.value}, real ids: {with_ids}): "
                                f"{exc}")  # fmt: skip
    print(f"{calls} requests")
    assert not failures, "\n\n".join(failures)
    assert calls >= len(operations)
