"""midrun's control API over real HTTP: live control of running generations (pause, edit,
undo, resume, abort), conflicts and malformed requests, breakpoints and stepping, the
pipeline pause, saved workflows, batches, failures, and who may do what."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import LiveServer, make_config, start_server, txt2img, wait_for

TERMINAL = ("completed", "failed", "aborted")


def save(http: httpx.Client, workflow: dict[str, Any], name: str = "txt2img") -> str:
    reply = http.post("/api/workflows", json={"name": name, "workflow": workflow})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def execute(http: httpx.Client, workflow_id: str, **parameters: Any) -> dict[str, Any]:
    reply = http.post(f"/api/workflows/{workflow_id}/execute", json={"parameters": parameters})
    assert reply.status_code == 201, reply.text
    return reply.json()


def run(http: httpx.Client, steps: int = 40, **kwargs: Any) -> str:
    """A txt2img job (queued through a saved workflow); its id."""
    return execute(http, save(http, txt2img(steps=steps, **kwargs)))["id"]


def standing(http: httpx.Client, job_id: str) -> dict[str, Any]:
    reply = http.get(f"/api/jobs/{job_id}/state")
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_state(http: httpx.Client, job_id: str, *states: str, timeout: float = 120) -> dict:
    def reached() -> dict[str, Any] | None:
        now = standing(http, job_id)
        return now if now["state"] in states else None

    try:
        return wait_for(reached, timeout=timeout)
    except AssertionError:  # say where it stood and what happened to it
        kinds = [(e["kind"], e.get("step")) for e in http.get(f"/api/jobs/{job_id}/events").json()]
        raise AssertionError(f"job {job_id} never reached {states}: {standing(http, job_id)}; "
                             f"its events: {kinds}") from None


def wait_step(http: httpx.Client, job_id: str, step: int) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        now = standing(http, job_id)
        assert now["state"] not in TERMINAL, now
        return now if now["node"] == "3" and (now["step"] or 0) >= step else None

    return wait_for(reached, timeout=120, interval=0.01)


def error_of(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    return reply.json()["error"]


# -- live control of a running generation --------------------------------------------------


def test_pause_edit_undo_and_resume_a_running_generation(http: httpx.Client) -> None:
    job_id = run(http)
    wait_step(http, job_id, 2)
    assert http.post(f"/api/jobs/{job_id}/pause").json()["state"] in ("pausing", "paused")
    paused = wait_state(http, job_id, "paused")
    assert paused["paused_by"] == "user" and paused["step"] < 40
    # two edits in one call (ComfyUI's shape of a prompt's inputs), then undo one, then all
    edits = http.put(f"/api/jobs/{job_id}/params", json={"3": {"cfg": 5.0, "steps": 30}})
    assert edits.status_code == 200, edits.text
    body = edits.json()
    assert [(e["input_name"], e["old"], e["new"]) for e in body["pending"]] == [
        ("cfg", 7.0, 5.0), ("steps", 40, 30)]  # fmt: skip
    assert body["modified_params"]["3.cfg"]["modified_mid_run"] is True
    _, second = body["edit_ids"]
    undone = http.delete(f"/api/jobs/{job_id}/params/{second}").json()
    assert [e["id"] for e in undone["undone"]] == [second]
    assert [e["input_name"] for e in undone["pending"]] == ["cfg"]
    assert http.delete(f"/api/jobs/{job_id}/params").json()["pending"] == []
    # one edit (the single form) that stays, shown by the diff
    single = http.put(f"/api/jobs/{job_id}/params",
                      json={"node_id": "3", "input": "cfg", "value": 6.5})  # fmt: skip
    assert single.json()["pending"][0]["new"] == 6.5
    diff = http.get(f"/api/jobs/{job_id}/diff").json()
    assert diff["changed"] == [{"node_id": "3", "input": "cfg", "from": 7.0, "to": 6.5}]
    assert standing(http, job_id)["pending_edits"][0]["new"] == 6.5
    resumed = http.post(f"/api/jobs/{job_id}/resume", json={"front": True})
    assert resumed.json()["state"] == "queued"
    done = wait_state(http, job_id, *TERMINAL)
    assert done["state"] == "completed" and done["pending_edits"] == []
    assert "9" in done["outputs"]
    debug = http.get(f"/api/jobs/{job_id}/debug").json()
    assert debug["modified_params_json"]["3.cfg"]["status"] == "applied"
    kinds = [e["kind"] for e in http.get(f"/api/jobs/{job_id}/events").json()]
    assert kinds.count("edited") == 3 and kinds.count("edit_undone") == 2
    assert {"pausing", "paused", "resumed", "edit_applied", "completed"} <= set(kinds)


def test_previews_of_a_job(http: httpx.Client) -> None:
    job_id = run(http, steps=4)
    wait_state(http, job_id, *TERMINAL)
    index = http.get(f"/api/jobs/{job_id}/preview", params={"format": "json"}).json()
    assert index["previews"] and index["previews"][-1]["step"] == 4
    latest = http.get(f"/api/jobs/{job_id}/preview")
    assert latest.status_code == 200 and latest.headers["content-type"].startswith("image/")
    assert latest.headers["x-midrun-step"] == "4"
    as_json = http.get(f"/api/jobs/{job_id}/preview", headers={"accept": "application/json"})
    assert as_json.json() == index
    step = index["previews"][0]["step"]
    assert http.get(f"/api/jobs/{job_id}/preview", params={"step": step}).status_code == 200
    missing = error_of(http.get(f"/api/jobs/{job_id}/preview", params={"step": 999}), 404)
    assert missing["type"] == "preview_not_found" and "step 999" in missing["message"]


def test_abort_with_a_reason_and_the_failures_listing(http: httpx.Client) -> None:
    job_id = run(http)
    wait_step(http, job_id, 2)
    reply = http.post(f"/api/jobs/{job_id}/abort", json={"reason": "wrong prompt"})
    assert reply.status_code == 200 and reply.json()["request"] == "abort"
    ended = wait_state(http, job_id, *TERMINAL)
    assert ended["state"] == "aborted"
    assert http.get(f"/api/jobs/{job_id}/debug").json()["abort_reason"] == "wrong prompt"
    found = http.get("/api/failures", params={"reason": "WRONG"}).json()
    assert [f["id"] for f in found] == [job_id] and found[0]["reason"] == "wrong prompt"
    assert http.get("/api/failures", params={"since": "2999-01-01T00:00:00"}).json() == []
    assert http.get("/api/failures", params={"until": "2000-01-01T00:00:00Z"}).json() == []
    bad = error_of(http.get("/api/failures", params={"since": "yesterday"}), 400)
    assert bad["type"] == "invalid_query" and "ISO 8601" in bad["message"]
    # what an ended job refuses, with the state it is in
    conflict = error_of(http.post(f"/api/jobs/{job_id}/resume"), 409)
    assert conflict["type"] == "job_state_conflict" and conflict["state"] == "aborted"
    edit = error_of(http.put(f"/api/jobs/{job_id}/params",
                             json={"node_id": "3", "input": "cfg", "value": 5.0}), 409)
    assert edit["state"] == "aborted"


def test_conflicts_carry_the_state_and_unknown_things_are_404(http: httpx.Client) -> None:
    job_id = run(http)
    held = http.post(f"/api/jobs/{job_id}/pause").json()
    if held["state"] == "pausing":
        wait_state(http, job_id, "paused")
    again = error_of(http.post(f"/api/jobs/{job_id}/pause"), 409)
    assert again["type"] == "job_state_conflict" and again["state"] == "paused"
    assert "already paused" in again["message"]
    assert http.post(f"/api/jobs/{job_id}/abort").json()["state"] == "aborted"
    step = error_of(http.post(f"/api/jobs/{job_id}/step", json={"mode": "over"}), 409)
    assert step["state"] == "aborted" and step["action"] == "step over"
    for method, path in [("POST", "/api/jobs/nope/pause"), ("GET", "/api/jobs/nope/state"),
                         ("GET", "/api/jobs/nope/preview"), ("DELETE", "/api/jobs/nope/params"),
                         ("GET", "/api/workflows/nope"), ("GET", "/api/batches/nope"),
                         ("PATCH", "/api/breakpoints/nope"),
                         ("DELETE", "/api/auth/users/nobody")]:  # fmt: skip
        kwargs = {"json": {"enabled": True}} if method == "PATCH" else {}
        reply = http.request(method, path, **kwargs)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["error"]["type"].endswith("not_found")
    gone = error_of(http.delete(f"/api/jobs/{job_id}/params/12345"), 404)
    assert gone["type"] == "edit_not_found"


def test_malformed_requests_get_specific_400s(http: httpx.Client) -> None:
    job_id = run(http)
    http.post(f"/api/jobs/{job_id}/pause")
    wait_state(http, job_id, "paused")
    params = f"/api/jobs/{job_id}/params"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"content": b"{not json"}, "invalid_json", "not valid JSON"),
        ({"content": b""}, "invalid_json", "needs a JSON object"),
        ({"json": [1, 2]}, "invalid_json", "must be a JSON object"),
        ({"json": {"node_id": 3, "input": "cfg", "value": 1}}, "invalid_field", "'node_id'"),
        ({"json": {"node_id": "3", "input": "cfg"}}, "invalid_edit", "needs 'value'"),
        ({"json": {"edits": []}}, "invalid_edit", "empty"),
        ({"json": {"edits": "cfg=5"}}, "invalid_field", "'edits' must be a list"),
        ({"json": {"edits": [5]}}, "invalid_edit", "edits[0] must be an object"),
        ({"json": {"node_id": "3", "input": "cfg", "value": 1, "x": 1}}, "invalid_edit",
         "unknown fields"),
        ({"json": {"node_id": "99", "input": "cfg", "value": 1}}, "invalid_edit", "'99'"),
        ({"json": {"node_id": "3", "input": "nope", "value": 1}}, "invalid_edit", "nope"),
        ({"json": {"node_id": "3", "input": "cfg", "value": "high"}}, "invalid_edit", "cfg"),
        ({"json": {"node_id": "3", "input": "steps", "value": -4}}, "invalid_edit", "steps"),
    ]  # fmt: skip
    for kwargs, kind, words in cases:
        error = error_of(http.put(params, **kwargs), 400)
        assert error["type"] == kind and words in error["message"], (kwargs, error)
    # a refused edit withdraws the ones made before it in the same call
    mixed = error_of(http.put(params, json={"edits": [
        {"node_id": "3", "input": "cfg", "value": 5.0},
        {"node_id": "3", "input": "cfg", "value": "high"}]}), 400)  # fmt: skip
    assert len(mixed["withdrawn_edits"]) == 1 and mixed["kept_edits"] == []
    assert http.get(f"/api/jobs/{job_id}/state").json()["pending_edits"] == []
    others: list[tuple[str, str, Any, str]] = [
        ("POST", f"/api/jobs/{job_id}/resume", {"front": "yes"}, "invalid_field"),
        ("POST", f"/api/jobs/{job_id}/abort", {"reason": 5}, "invalid_field"),
        ("POST", f"/api/jobs/{job_id}/step", {"mode": "sideways"}, "invalid_step_mode"),
        ("POST", f"/api/jobs/{job_id}/step", {}, "missing_field"),
        ("POST", f"/api/jobs/{job_id}/breakpoints", {"node_id": "3", "condition": "step >"},
         "invalid_condition"),
        ("POST", f"/api/jobs/{job_id}/breakpoints", {"node_id": "42"}, "invalid_breakpoint"),
        ("POST", f"/api/jobs/{job_id}/breakpoints", {"node_id": "3", "step": "2"},
         "invalid_breakpoint"),
        ("DELETE", f"/api/jobs/{job_id}/params/abc", None, "invalid_edit_id"),
        ("GET", f"/api/jobs/{job_id}/preview?step=x", None, "invalid_query"),
        ("POST", "/api/workflows", {"name": "", "workflow": {}}, "invalid_field"),
        ("POST", "/api/workflows", {"name": "x"}, "missing_field"),
        ("POST", "/api/workflows", {"name": "x", "workflow": {"1": {"class_type": "Nope"}}},
         None),
    ]  # fmt: skip
    for method, path, body, kind in others:
        error = error_of(http.request(method, path, json=body), 400)
        assert kind is None or error["type"] == kind, (path, body, error)
    assert http.post(f"/api/jobs/{job_id}/abort").status_code == 200


# -- breakpoints and stepping ------------------------------------------------------------


def test_a_breakpoint_stops_the_job_and_stepping_moves_it(http: httpx.Client) -> None:
    workflow_id = save(http, txt2img(steps=8))
    set_bp = http.post(f"/api/workflows/{workflow_id}/breakpoints",
                       json={"node_id": "3", "step": 3})  # fmt: skip
    assert set_bp.status_code == 201, set_bp.text
    bp = set_bp.json()
    assert http.get(f"/api/workflows/{workflow_id}/breakpoints").json() == [bp]
    job_id = execute(http, workflow_id)["id"]
    hit = wait_state(http, job_id, "paused", *TERMINAL)
    assert (hit["state"], hit["paused_by"], hit["node"], hit["step"]) == ("paused",
                                                                          "breakpoint", "3", 3)
    assert hit["held"] == "breakpoint"
    assert http.get(f"/api/jobs/{job_id}/breakpoints").json() == [bp]
    # into: the next sampler step
    assert http.post(f"/api/jobs/{job_id}/step", json={"mode": "into"}).status_code == 200
    into = wait_state(http, job_id, "paused", *TERMINAL)
    assert (into["paused_by"], into["node"], into["step"]) == ("step", "3", 4)
    # over: the next node (the decoder)
    assert http.post(f"/api/jobs/{job_id}/step", json={"mode": "over"}).status_code == 200
    over = wait_state(http, job_id, "paused", *TERMINAL)
    assert (over["paused_by"], over["node"], over["position"]) == ("step", "8", "before")
    assert over["outputs"] == {}
    # a job breakpoint on the saver, then continue to it, then to the end
    job_bp = http.post(f"/api/jobs/{job_id}/breakpoints", json={"node_id": "9"}).json()
    assert job_bp["job_id"] == job_id and job_bp["position"] == "before"
    assert len(http.get(f"/api/jobs/{job_id}/breakpoints").json()) == 2
    http.post(f"/api/jobs/{job_id}/resume")
    at_saver = wait_state(http, job_id, "paused", *TERMINAL)
    assert (at_saver["paused_by"], at_saver["node"]) == ("breakpoint", "9")
    off = http.patch(f"/api/breakpoints/{job_bp['id']}", json={"enabled": False})
    assert off.json()["enabled"] is False
    assert http.delete(f"/api/breakpoints/{bp['id']}").status_code == 200
    assert http.get(f"/api/workflows/{workflow_id}/breakpoints").json() == []
    http.post(f"/api/jobs/{job_id}/resume")
    assert wait_state(http, job_id, *TERMINAL)["state"] == "completed"
    hits = [e for e in http.get(f"/api/jobs/{job_id}/events").json()
            if e["kind"] == "breakpoint_hit"]  # fmt: skip
    assert [(e["node_id"], e["step"]) for e in hits] == [("3", 3), ("9", None)]


def test_nodes_a_continued_run_recomputes_do_not_hit_their_breakpoints(
    http: httpx.Client,
) -> None:
    # on the workflow, so it is there before the job reaches its first node
    workflow_id = save(http, txt2img(steps=40))
    bp = http.post(f"/api/workflows/{workflow_id}/breakpoints", json={"node_id": "4"}).json()
    job_id = execute(http, workflow_id)["id"]
    first = wait_state(http, job_id, "paused", *TERMINAL)
    assert (first["paused_by"], first["node"]) == ("breakpoint", "4")
    http.post(f"/api/jobs/{job_id}/resume")
    wait_step(http, job_id, 2)
    # an edit while running: the run is suspended, edited and resumed in place, which
    # recomputes the loader (its model is not saved): not a new hit
    edit = http.put(f"/api/jobs/{job_id}/params",
                    json={"node_id": "3", "input": "cfg", "value": 4.0})  # fmt: skip
    assert edit.status_code == 200, edit.text
    wait_for(lambda: standing(http, job_id)["pending_edits"] == [])
    http.post(f"/api/jobs/{job_id}/pause")
    assert wait_state(http, job_id, "paused", *TERMINAL)["paused_by"] == "user"
    http.post(f"/api/jobs/{job_id}/resume")  # and a continue from the checkpoint
    assert wait_state(http, job_id, *TERMINAL)["state"] == "completed"
    events = http.get(f"/api/jobs/{job_id}/events").json()
    assert [e["data"]["breakpoint_id"] for e in events if e["kind"] == "breakpoint_hit"] == [
        bp["id"]]  # fmt: skip
    assert "edit_applied" in [e["kind"] for e in events]


# -- the pipeline ------------------------------------------------------------------------


def test_the_pipeline_pauses_and_resumes(http: httpx.Client) -> None:
    job_id = run(http)
    wait_step(http, job_id, 1)
    paused = http.post("/api/pipeline/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused" and job_id in paused.json()["paused_jobs"]
    assert standing(http, job_id)["paused_by"] == "pipeline"
    assert http.get("/api/pipeline").json()["state"] == "paused"
    conflict = error_of(http.post("/api/pipeline/pause"), 409)
    assert conflict["type"] == "pipeline_state_conflict" and conflict["state"] == "paused"
    assert http.post("/api/pipeline/resume").json()["state"] == "running"
    assert error_of(http.post("/api/pipeline/resume"), 409)["state"] == "running"
    assert wait_state(http, job_id, *TERMINAL)["state"] == "completed"


# -- saved workflows, batches ------------------------------------------------------------


def test_saved_workflows_their_parameters_and_runs(http: httpx.Client) -> None:
    workflow_id = save(http, txt2img(steps=2), name="two steps")
    assert {"id": workflow_id, "name": "two steps", "owner": "local"} in http.get(
        "/api/workflows").json()
    saved = http.get(f"/api/workflows/{workflow_id}").json()
    assert saved["workflow"]["3"]["inputs"]["steps"] == 2
    params = {(p["node_id"], p["field"]): p for p in
              http.get(f"/api/workflows/{workflow_id}/parameters").json()}  # fmt: skip
    assert params[("3", "seed")]["value"] == 1
    job = execute(http, workflow_id, **{"3.seed": 42})
    assert job["parameters_used"] == {"3.seed": 42} and job["owner"] == "local"
    assert job["workflow"]["3"]["inputs"]["seed"] == 42 and job["workflow_id"] == workflow_id
    assert wait_state(http, job["id"], *TERMINAL)["state"] == "completed"
    again = {(p["node_id"], p["field"]): p for p in
             http.get(f"/api/workflows/{workflow_id}/parameters").json()}  # fmt: skip
    assert again[("3", "seed")]["value"] == 42  # last used
    bad = error_of(http.post(f"/api/workflows/{workflow_id}/execute",
                             json={"parameters": {"3.nope": 1}}), 400)
    assert "nope" in bad["message"]


def test_a_batch_with_incrementing_seeds_and_stop(http: httpx.Client) -> None:
    workflow_id = save(http, txt2img(steps=30))
    seeds = {"type": "seed", "node_id": "3", "field": "seed", "mode": "increment",
             "start": 100}  # fmt: skip
    reply = http.post(f"/api/workflows/{workflow_id}/batch",
                      json={"count": 4, "variations": [seeds]})  # fmt: skip
    assert reply.status_code == 201, reply.text
    batch = reply.json()
    assert batch["total_count"] == 4 and batch["status"] == "running"
    assert [j["parameters_used"] for j in batch["jobs"]] == [{"3.seed": s} for s in range(100,
                                                                                          104)]
    first = batch["jobs"][0]["id"]
    wait_state(http, first, "running", *TERMINAL)
    diff = http.get(f"/api/jobs/{first}/diff",
                    params={"to": batch["jobs"][1]["id"]}).json()  # fmt: skip
    assert diff["changed"] == [{"node_id": "3", "input": "seed", "from": 100, "to": 101}]
    assert diff["parameters"] == {"3.seed": {"from": 100, "to": 101}}
    stopped = http.post(f"/api/batches/{batch['id']}/stop", json={"include_running": False})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    states = {j["id"]: j["state"] for j in stopped.json()["jobs"]}
    assert list(states.values())[1:] == ["aborted"] * 3
    assert states[first] in ("running", "completed")
    assert wait_state(http, first, *TERMINAL)["state"] == "completed"
    assert http.get(f"/api/batches/{batch['id']}").json()["states"] == {"completed": 1,
                                                                        "aborted": 3}
    reasons = {f["id"]: f["reason"] for f in http.get("/api/failures").json()}
    assert all(reasons[j] == "batch stopped" for j in list(states)[1:])
    bad = [({"count": 0}, "invalid_field"), ({"count": "4"}, "invalid_field"),
           ({"variations": [{"type": "dice", "node_id": "3", "field": "seed"}]},
            "invalid_variation"),
           ({"variations": [{"type": "sweep", "node_id": "3", "field": "cfg", "start": 0,
                             "stop": 1e12, "step": 1}]}, "invalid_variation")]  # fmt: skip
    for body, kind in bad:
        assert error_of(http.post(f"/api/workflows/{workflow_id}/batch", json=body),
                        400)["type"] == kind  # fmt: skip


# -- who may do what -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that requires tokens; no workers, so jobs wait in the queue."""
    server = start_server(make_config(tmp_path_factory.mktemp("auth"), auth=True,
                                      workers=False))  # fmt: skip
    yield server
    server.stop()


def as_user(live: LiveServer, token: str) -> httpx.Client:
    return live.client(headers={"authorization": f"Bearer {token}"})


def test_tokens_owners_and_admins(guarded: LiveServer, tmp_path: Path) -> None:
    users = guarded.server.users
    admin_token = users.create("root", "admin")
    alice, bob = users.create("alice"), users.create("bob")
    with guarded.client() as anonymous:
        refused = error_of(anonymous.get("/api/pipeline"), 401)
        assert refused["type"] == "unauthorized" and "bearer token" in refused["message"]
    with as_user(guarded, alice) as a, as_user(guarded, bob) as b, \
            as_user(guarded, admin_token) as root:  # fmt: skip
        job = execute(a, save(a, txt2img(steps=2)))
        assert job["owner"] == "alice"
        denied = error_of(b.post(f"/api/jobs/{job['id']}/pause"), 403)
        assert denied["type"] == "forbidden" and "alice" in denied["message"]
        assert error_of(b.get(f"/api/jobs/{job['id']}/state"), 403)["type"] == "forbidden"
        assert error_of(b.get(f"/api/workflows/{job['workflow_id']}"), 403)
        assert error_of(b.post("/api/pipeline/pause"), 403)["type"] == "forbidden"
        assert error_of(a.get("/api/auth/users"), 403)["type"] == "forbidden"
        assert b.get("/api/workflows").json() == []
        assert a.post(f"/api/jobs/{job['id']}/pause").json()["state"] == "paused"
        assert root.post(f"/api/jobs/{job['id']}/resume").json()["state"] == "queued"
        assert root.post("/api/pipeline/pause").status_code == 200
        assert root.post("/api/pipeline/resume").status_code == 200
        listed = {u["name"]: u["role"] for u in root.get("/api/auth/users").json()}
        assert listed == {"root": "admin", "alice": "creator", "bob": "creator"}
        made = root.post("/api/auth/users", json={"name": "carol", "role": "creator"})
        assert made.status_code == 201 and made.json()["token"].startswith("mr_")
        with as_user(guarded, made.json()["token"]) as c:
            assert c.get("/api/workflows").status_code == 200
        assert error_of(root.post("/api/auth/users", json={"name": "bad name!"}),
                        400)["type"] == "invalid_user"  # fmt: skip
        assert root.delete("/api/auth/users/carol").json() == {"deleted": "carol"}
        with as_user(guarded, made.json()["token"]) as c:
            assert c.get("/api/workflows").status_code == 401
        assert root.post(f"/api/jobs/{job['id']}/abort").json()["state"] == "aborted"
