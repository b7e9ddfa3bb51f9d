"""Hostile and broken input against a real server: every route answers 2xx or a 4xx that
says what was wrong, never a 5xx; nothing stored can poison a later read; limits on
bodies, nesting, prompt size and edits per request are named in their refusals."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from itertools import product
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from midrun.graph.validation import MAX_NODES, MAX_TEXT_CHARS
from midrun.server.control import MAX_EDITS
from midrun.server.requests import MAX_DEPTH
from tests.jobs.conftest import pg_schema
from tests.server.conftest import LiveServer, make_config, start_server, txt2img, wait_for


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:  # fmt: skip
    root = tmp_path_factory.mktemp("bad-input")
    if request.param == "sqlite":
        live = start_server(make_config(root))
        yield live
        live.stop()
        return
    for url in pg_schema():
        live = start_server(make_config(root, database_url=url))
        yield live
        live.stop()


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def post_raw(http: httpx.Client, path: str, body: str | bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"content-type": "application/json"})


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


# -- values JSON has no word for, and strings nothing can store ------------------------


@pytest.mark.parametrize(("text", "named"), [
    ('{"note": NaN}', "extra_data.note"),
    ('{"note": Infinity}', "extra_data.note"),
    ('{"note": 1e999}', "extra_data.note"),
    ('{"note": "a\\u0000b"}', "extra_data.note"),
    ('{"note": "\\ud800"}', "extra_data.note"),
    ('{"no\\u0000te": 1}', "extra_data.no"),
])  # fmt: skip
def test_unstorable_values_in_a_prompt_are_refused_naming_the_field(
    http: httpx.Client, text: str, named: str
) -> None:
    body = f'{{"prompt": {json.dumps(txt2img(steps=1))}, "extra_data": {text}}}'
    answer = post_raw(http, "/prompt", body)
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert error["type"] == "invalid_json"
    assert named in error["message"]
    # nothing was stored that later reads choke on
    for path in ("/history", "/queue", "/api/jobs", "/api/jobs?limit=5"):
        assert http.get(path).status_code == 200, path


def test_non_finite_cfg_is_refused_with_a_serialisable_error(http: httpx.Client) -> None:
    prompt = json.dumps(txt2img(steps=1)).replace('"cfg": 7.0', '"cfg": 1e999')
    answer = post_raw(http, "/prompt", f'{{"prompt": {prompt}}}')
    assert answer.status_code == 400
    assert "prompt.3.inputs.cfg" in error_of(answer)["message"]
    as_text = txt2img(steps=1)
    as_text["3"]["inputs"]["cfg"] = "inf"  # a string the widget coercion would take
    answer = http.post("/prompt", json={"prompt": as_text})
    assert answer.status_code == 400
    errors = answer.json()["node_errors"]["3"]["errors"]
    assert errors[0]["type"] == "invalid_input_type"


def test_settings_refuse_nan_and_stay_readable(http: httpx.Client) -> None:
    answer = post_raw(http, "/settings", '{"x": NaN}')
    assert answer.status_code == 400
    assert "x is NaN" in error_of(answer)["message"]
    answer = post_raw(http, "/settings/y", "-Infinity")
    assert answer.status_code == 400
    assert http.get("/settings").status_code == 200
    assert "x" not in http.get("/settings").json()


@pytest.mark.parametrize("path", ["/prompt", "/queue", "/interrupt", "/free", "/settings",
                                  "/history", "/api/jobs/cancel", "/api/workflows"])  # fmt: skip
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deeply_nested_bodies_are_refused_naming_the_limit(
    http: httpx.Client, path: str, depth: int
) -> None:
    answer = post_raw(http, path, nested(depth))
    assert answer.status_code == 400, answer.text
    text = answer.text
    assert "nested" in text and str(MAX_DEPTH) in text


# -- limits on what one request may ask -------------------------------------------------


def test_prompt_text_over_the_limit_is_refused_under_its_node(http: httpx.Client) -> None:
    answer = http.post("/prompt", json={"prompt": txt2img(steps=1, text="a" * 1_000_000)})
    assert answer.status_code == 400
    (error,) = answer.json()["node_errors"]["6"]["errors"]
    assert error["type"] == "value_too_long"
    assert error["extra_info"]["limit"] == MAX_TEXT_CHARS
    assert len(answer.content) < 10_000  # the refusal does not echo the megabyte back
    fits = http.post("/prompt", json={"prompt": txt2img(steps=1, text="a " * 500)})
    assert fits.status_code == 200, fits.text


def test_a_prompt_with_too_many_nodes_is_refused(http: httpx.Client) -> None:
    prompt = txt2img(steps=1)
    for i in range(MAX_NODES):
        prompt[f"p{i}"] = {"class_type": "PrimitiveInt", "inputs": {"value": i}}
    answer = http.post("/prompt", json={"prompt": prompt})
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["type"] == "prompt_too_large"
    assert str(MAX_NODES) in error["message"]


def test_too_many_edits_in_one_request_are_refused_before_any_is_checked(
    http: httpx.Client,
) -> None:
    queued = http.post("/prompt", json={"prompt": txt2img(steps=2)}).json()["prompt_id"]
    edits = [{"node_id": "3", "input": "seed", "value": i} for i in range(MAX_EDITS + 1)]
    answer = http.put(f"/api/jobs/{queued}/params", json={"edits": edits})
    assert answer.status_code == 413
    assert error_of(answer)["type"] == "too_many_edits"
    state = http.get(f"/api/jobs/{queued}/state").json()
    assert state["pending_edits"] == [] and state["modified_params"] == {}


def test_bodies_over_the_json_limit_are_refused_before_they_are_read(
    server: LiveServer, http: httpx.Client
) -> None:
    limit = server.server.config.max_json_bytes
    answer = post_raw(http, "/prompt", b'{"prompt": "' + b"a" * limit + b'"}')
    assert answer.status_code == 413
    assert error_of(answer)["type"] == "payload_too_large"


# -- every route, every kind of wrong body ----------------------------------------------

WRONG_BODIES: list[str | bytes] = [
    "", "null", "[]", '"text"', "12", "true", "{", b"\xff\xfe\x00", '{"a": NaN}',
    nested(MAX_DEPTH + 5), "[" * 50_000,
    json.dumps({"prompt": [], "edits": {}, "node_id": 5, "input": [], "value": None,
                "delete": "x", "clear": "yes", "condition": 7, "step": "x", "name": 3,
                "role": [], "workflow": "x", "variations": 5, "limit": -1}),
    json.dumps({"prompt": {"1": "x"}, "edits": [1, "a", None], "delete": [1, {}]}),
    json.dumps({"prompt": {"1": {"class_type": ["x"], "inputs": 5}}}),
    json.dumps({k: "x" * 70_000 for k in ("prompt", "node_id", "input", "condition", "name",
                                          "message", "workflow", "client_id")}),
    json.dumps({"prompt_id": "1" * 5000, "number": 10**30, "front": {"a": 1}}),
]  # fmt: skip
QUERIES = ["", "?limit=100000000000000000000&offset=-1", "?max_items=x&offset=1e30",
           "?filename=../../etc/passwd&type=output&subfolder=..", "?dir=%00&recurse=x"]  # fmt: skip


def concrete(path: str, job_id: str) -> str:
    return re.sub(r"\{([a-z_]+)(:[a-z]+)?\}", lambda m: job_id if "id" in m[1] else "x", path)


def test_no_route_answers_a_5xx_to_wrong_bodies(server: LiveServer, http: httpx.Client) -> None:
    job_id = http.post("/prompt", json={"prompt": txt2img(steps=1)}).json()["prompt_id"]
    wait_for(lambda: http.get(f"/api/jobs/{job_id}/state").json()["state"] == "completed")
    app = server.uvicorn.config.app
    failures: list[str] = []
    tried = 0
    for route in app.routes:
        if not isinstance(route, Route) or route.path in ("/", "/ws", "/api/ws"):
            continue
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            writes = method in ("POST", "PUT", "PATCH")
            for ident in (job_id, "no-such-job", "..%2F..%2Fx"):
                path = concrete(route.path, ident)
                for query, body in product(QUERIES if not writes else [""],
                                           WRONG_BODIES if writes else [b""]):  # fmt: skip
                    tried += 1
                    asked = f"{method} {path}{query} {str(body)[:60]!r}"
                    try:  # streamed: /api/events answers with a stream that never ends
                        with http.stream(method, path + query, content=body,
                                         headers={"content-type": "application/json"}
                                         ) as answer:  # fmt: skip
                            if answer.status_code >= 500:
                                text = answer.read().decode(errors="replace")[:200]
                                failures.append(f"{asked} -> {answer.status_code} {text}")
                    except httpx.TransportError as exc:
                        failures.append(f"{asked} -> {exc!r}")
    assert tried > 1000
    assert not failures, "\n".join(failures[:20])


def test_a_duplicate_prompt_id_is_refused_without_saying_whose_it_is(
    http: httpx.Client,
) -> None:
    prompt_id = str(uuid.uuid4())
    first = http.post("/prompt", json={"prompt": txt2img(steps=1), "prompt_id": prompt_id})
    assert first.status_code == 200, first.text
    again = http.post("/prompt", json={"prompt": txt2img(steps=1), "prompt_id": prompt_id})
    assert again.status_code == 400, again.text
    error = error_of(again)
    assert error["type"] == "duplicate_prompt_id"
    assert "local" not in again.text  # the owner of the job that holds the id


def test_a_nan_stored_before_strict_reading_does_not_break_listings(
    server: LiveServer, http: httpx.Client
) -> None:
    if server.server.db.dialect != "sqlite":
        pytest.skip("PostgreSQL's JSONB never stored a NaN")
    from sqlalchemy import text

    job_id = http.post("/prompt", json={"prompt": txt2img(steps=1)}).json()["prompt_id"]
    with server.server.db.begin() as conn:  # as an older midrun wrote it
        conn.execute(text("UPDATE jobs SET extra_data = :doc WHERE id = :id"),
                     {"doc": '{"note": NaN, "big": Infinity}', "id": job_id})  # fmt: skip
    for path in ("/history", "/queue", "/api/jobs", f"/api/jobs/{job_id}"):
        assert http.get(path).status_code == 200, path
