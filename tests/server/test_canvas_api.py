"""What the canvas extension needs from the server, over real HTTP: breakpoints kept in
the canvas workflow set on the job /prompt queues (in the same transaction), the preview
interval from extra_data or from the user's setting, a job's parameters with its pending
edits, the page's offline content policy, and the start-up reads a new user makes."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import httpx

from midrun.server.frontend import package_dir
from tests.server.conftest import LiveServer, txt2img
from tests.server.test_control import TERMINAL, error_of, wait_state, wait_step


def canvas_workflow(breakpoints: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """A UI-format document as the frontend sends it in extra_pnginfo (nodes only)."""
    return {"nodes": [{"id": node_id, "type": "X", "properties": {"midrun.breakpoints": specs}}
                      for node_id, specs in breakpoints.items()]}  # fmt: skip


def queue(http: httpx.Client, workflow: dict[str, Any], **extra: Any) -> httpx.Response:
    return http.post("/api/prompt", json={"prompt": workflow, "extra_data": extra})


def test_canvas_breakpoints_are_set_on_the_queued_job(http: httpx.Client) -> None:
    canvas = canvas_workflow({8: [{"position": "before"}], 3: [{"step": 2}],
                              99: [{"position": "before"}]})  # fmt: skip
    reply = queue(http, txt2img(steps=4), extra_pnginfo={"workflow": canvas})
    assert reply.status_code == 200, reply.text
    job_id = reply.json()["prompt_id"]
    set_on_job = {(bp["node_id"], bp["position"], bp["step"])
                  for bp in http.get(f"/api/jobs/{job_id}/breakpoints").json()}  # fmt: skip
    assert set_on_job == {("8", "before", None), ("3", "step", 2)}  # node 99 is not run
    first = wait_state(http, job_id, "paused", *TERMINAL)
    assert (first["paused_by"], first["node"], first["step"]) == ("breakpoint", "3", 2)
    http.post(f"/api/jobs/{job_id}/resume")
    second = wait_state(http, job_id, "paused", *TERMINAL)
    assert (second["paused_by"], second["node"]) == ("breakpoint", "8")
    http.post(f"/api/jobs/{job_id}/resume")
    assert wait_state(http, job_id, *TERMINAL)["state"] == "completed"


def test_a_malformed_canvas_breakpoint_is_refused_naming_its_node(http: httpx.Client) -> None:
    before = len(http.get("/api/jobs").json()["jobs"])
    for specs, words in (([{"step": 0}], "step must be >= 1"),
                         ([{"when": "x"}], "Unknown breakpoint fields"),
                         ("yes", "must be a list")):  # fmt: skip
        reply = queue(http, txt2img(steps=2),
                      extra_pnginfo={"workflow": canvas_workflow({3: specs})})  # fmt: skip
        error = error_of(reply, 400)
        assert error["message"].startswith("Node 3") and words in error["message"], error
    assert len(http.get("/api/jobs").json()["jobs"]) == before  # nothing was queued


def preview_steps(http: httpx.Client, job_id: str) -> list[int]:
    wait_state(http, job_id, *TERMINAL)
    index = http.get(f"/api/jobs/{job_id}/preview", params={"format": "json"}).json()
    return [p["step"] for p in index["previews"]]


def test_the_preview_interval_comes_from_the_job_or_the_users_setting(
        live: LiveServer, http: httpx.Client) -> None:  # fmt: skip
    job_id = queue(http, txt2img(steps=6), midrun={"preview_every": 3}).json()["prompt_id"]
    assert preview_steps(http, job_id) == [3, 6]
    assert http.post("/api/settings/midrun.Preview.EverySteps", json=2).status_code == 200
    try:
        job_id = queue(http, txt2img(steps=6)).json()["prompt_id"]
        job = http.get(f"/api/jobs/{job_id}").json()
        assert job["workflow"]["extra_data"]["midrun"] == {"preview_every": 2}
        assert preview_steps(http, job_id) == [2, 4, 6]
    finally:
        http.post("/api/settings/midrun.Preview.EverySteps", json=1)
    for bad in (0, 1001, 2.5, "3", True):
        error = error_of(queue(http, txt2img(steps=2), midrun={"preview_every": bad}), 400)
        assert error["type"] == "invalid_preview_interval" and "preview_every" in error["message"]


def test_a_jobs_parameters_show_its_pending_edits(http: httpx.Client) -> None:
    job_id = queue(http, txt2img(steps=40)).json()["prompt_id"]
    wait_step(http, job_id, 2)
    http.post(f"/api/jobs/{job_id}/pause")
    wait_state(http, job_id, "paused")
    edit = http.put(f"/api/jobs/{job_id}/params",
                    json={"node_id": "3", "input": "cfg", "value": 4.5})  # fmt: skip
    (edit_id,) = edit.json()["edit_ids"]
    listed = http.get(f"/api/jobs/{job_id}/parameters").json()
    params = {(p["node_id"], p["field"]): p for p in listed}
    cfg = params[("3", "cfg")]
    assert (cfg["value"], cfg["original"], cfg["edit_id"]) == (4.5, 7.0, edit_id)
    assert cfg["min"] == 0 and cfg["max"] == 100
    assert "edit_id" not in params[("3", "steps")] and params[("3", "steps")]["value"] == 40
    assert params[("3", "sampler_name")]["options"][0] == "euler"
    assert error_of(http.get("/api/jobs/nope/parameters"), 404)["type"] == "job_not_found"
    http.post(f"/api/jobs/{job_id}/abort")
    wait_state(http, job_id, *TERMINAL)


def test_the_page_may_only_talk_to_this_server(http: httpx.Client) -> None:
    page = http.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert http.get("/index.html").headers["content-security-policy"] == policy
    index = (package_dir() / "index.html").read_text()
    for body in re.findall(r"<script>(.*?)</script>", index, re.S):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


def test_a_new_users_start_up_reads_find_their_files(live: LiveServer, http: httpx.Client) -> None:
    for directory in ("workflows", "subgraphs"):
        reply = http.get("/api/userdata", params={"dir": directory, "recurse": "true"})
        assert reply.status_code == 200 and reply.json() == []
    assert http.get("/api/userdata/comfy.templates.json").json() == []
    assert http.get("/api/userdata/user.css").status_code == 200
    css = http.get("/user.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert http.get("/templates/index.json").json() == []
    assert http.get("/templates/index_logo.json").json() == {}
