"""ComfyUI's API on a live midrun server: prompts over HTTP, their run over the WebSocket
(messages in ComfyUI's order, previews in both binary formats, executed images), the
queue, interrupts, history and the jobs listing the frontend reads."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
import websockets

from midrun import __version__ as midrun_version
from tests.server.conftest import LiveServer, txt2img, wait_for


async def _connect(live: LiveServer, client_id: str, metadata: bool) -> Any:
    ws = await websockets.connect(f"{live.ws_url}/ws?clientId={client_id}")
    hello = json.loads(await ws.recv())
    assert hello["type"] == "status" and hello["data"]["sid"] == client_id
    flags = {"supports_preview_metadata": metadata}
    await ws.send(json.dumps({"type": "feature_flags", "data": flags}))
    reply = json.loads(await ws.recv())
    for _ in range(20):  # a queue status broadcast (another test's prompt) may come first
        if reply["type"] != "status":
            break
        reply = json.loads(await ws.recv())
    assert reply["type"] == "feature_flags"
    assert reply["data"]["supports_preview_metadata"] is True
    return ws


async def _until_done(ws: Any, prompt_id: str, timeout: float = 60) -> list[Any]:
    """Every message up to ``executing`` with node null for ``prompt_id``."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        if isinstance(raw, bytes):
            messages.append(raw)
            continue
        message = json.loads(raw)
        messages.append(message)
        data = message["data"]
        if message["type"] == "executing" and data.get("node") is None \
                and data.get("prompt_id") == prompt_id:  # fmt: skip
            return messages
    raise AssertionError("the run did not finish")


def _types(messages: list[Any]) -> list[str]:
    return [m["type"] if isinstance(m, dict) else "binary" for m in messages]


async def _run_one(live: LiveServer, metadata: bool) -> tuple[str, list[Any]]:
    client_id = uuid.uuid4().hex
    ws = await _connect(live, client_id, metadata)
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            reply = await http.post("/prompt", json={"prompt": txt2img(steps=3),
                                                     "client_id": client_id})  # fmt: skip
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["node_errors"] == {} and isinstance(body["number"], int)
            return body["prompt_id"], await _until_done(ws, body["prompt_id"])
    finally:
        await ws.close()


def test_a_prompt_runs_with_comfyui_messages_in_order(live: LiveServer) -> None:
    prompt_id, messages = asyncio.run(_run_one(live, metadata=True))
    types = _types(messages)
    order = ["execution_start", "executing", "progress", "executed", "execution_success"]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    assert types[-1] == "executing"
    text = [m for m in messages if isinstance(m, dict)]
    comfy = [m for m in text if m["type"] not in ("status", "feature_flags")
             and not m["type"].startswith("midrun.")]  # fmt: skip
    assert all(m["data"].get("prompt_id") == prompt_id for m in comfy)
    progress = [m["data"] for m in text if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "3"), (2, 3, "3"),
                                                                     (3, 3, "3")]  # fmt: skip
    running = [m["data"]["nodes"] for m in text if m["type"] == "progress_state"]
    assert any(n.get("3", {}).get("state") == "running" for n in running)
    assert running[-1]["9"]["state"] == "finished"
    executing = [m["data"]["node"] for m in text if m["type"] == "executing"]
    assert executing[:-1] and "3" in executing and executing[-1] is None
    executed = next(m["data"] for m in text if m["type"] == "executed")
    image = executed["output"]["images"][0]
    assert executed["node"] == "9" and image["type"] == "output"
    assert (live.server.config.output_dir / image["subfolder"] / image["filename"]).is_file()
    # Type-4 previews: metadata JSON naming the prompt and node, then a JPEG.
    frames = [m for m in messages if isinstance(m, bytes)]
    assert frames
    kind, size = struct.unpack(">II", frames[0][:8])
    assert kind == 4
    meta = json.loads(frames[0][8:8 + size])
    assert meta["prompt_id"] == prompt_id and meta["node_id"] == "3"
    assert meta["display_node_id"] == "3" and meta["image_type"] == "image/jpeg"
    assert frames[0][8 + size:8 + size + 2] == b"\xff\xd8"


def test_previews_arrive_in_their_place_among_a_run_messages(live: LiveServer,
                                                              monkeypatch) -> None:
    """Each binary preview comes after its prompt's first progress and before that
    prompt's execution_success, for prompts queued back to back on one socket, even when
    reading a preview is slow (as a big one on a busy disk is)."""
    from midrun.server import hub

    def slow_fit(*args: Any) -> Any:
        time.sleep(0.05)  # stands in for a slow read: not a synchronisation
        return real_fit(*args)

    real_fit = hub.fit_preview
    monkeypatch.setattr(hub, "fit_preview", slow_fit)

    async def scenario() -> tuple[list[str], list[Any]]:
        client_id = uuid.uuid4().hex
        ws = await _connect(live, client_id, metadata=True)
        try:
            async with httpx.AsyncClient(base_url=live.url) as http:
                ids = []
                for seed in range(3):
                    reply = await http.post("/prompt", json={
                        "prompt": txt2img(steps=10, seed=seed), "client_id": client_id,
                        "extra_data": {"midrun": {"preview_every": 1}}})  # fmt: skip
                    ids.append(reply.json()["prompt_id"])
            return ids, await _until_done(ws, ids[-1], timeout=120)
        finally:
            await ws.close()

    ids, messages = asyncio.run(scenario())
    seen: dict[str, list[str]] = {prompt_id: [] for prompt_id in ids}
    for message in messages:
        if isinstance(message, bytes):
            _, size = struct.unpack(">II", message[:8])
            prompt_id = json.loads(message[8:8 + size])["prompt_id"]
            seen[prompt_id].append("preview")
        elif message["data"].get("prompt_id") in seen and message["type"] in (
                "progress", "execution_success"):  # fmt: skip
            seen[message["data"]["prompt_id"]].append(message["type"])
    for order in seen.values():
        assert order.count("preview") >= 5, order
        assert order[0] == "progress" and order[-1] == "execution_success", order


def test_save_image_websocket_sends_the_full_png_over_the_socket(live: LiveServer) -> None:
    """As ComfyUI's websockets_api_example_ws_images.py reads it: after ``executing`` of
    the SaveImageWebsocket node, binary frames (type 1, format 2: PNG) hold the images."""
    import io

    import numpy as np
    from PIL import Image

    async def scenario() -> list[Any]:
        client_id = uuid.uuid4().hex
        ws = await websockets.connect(f"{live.ws_url}/ws?clientId={client_id}")
        try:
            await ws.recv()  # status
            prompt = txt2img(steps=2, seed=11)
            prompt["9"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
            async with httpx.AsyncClient(base_url=live.url) as http:
                reply = await http.post("/prompt", json={"prompt": prompt,
                                                         "client_id": client_id})  # fmt: skip
                assert reply.status_code == 200, reply.text
            return await _until_done(ws, reply.json()["prompt_id"])
        finally:
            await ws.close()

    messages = asyncio.run(scenario())
    current, images = None, []
    for message in messages:  # the example client's loop
        if isinstance(message, bytes):
            if current == "9":
                images.append(message)
        elif message["type"] == "executing":
            current = message["data"]["node"]
    assert len(images) == 1
    kind, image_format = struct.unpack(">II", images[0][:8])
    assert (kind, image_format) == (1, 2)  # PREVIEW_IMAGE, PNG
    sent = np.asarray(Image.open(io.BytesIO(images[0][8:])))
    saved = live.server.jobs.wait(live.server.jobs.submit(txt2img(steps=2, seed=11)).id)
    file = saved.outputs["9"]["images"][0]
    written = np.asarray(Image.open(live.server.config.output_dir / file["subfolder"]
                                    / file["filename"]))  # fmt: skip
    assert sent.shape == (64, 64, 3) and np.array_equal(sent, written)
    types = _types(messages)
    at = types.index("binary", max(i for i, m in enumerate(messages) if isinstance(m, dict)
                                   and m["type"] == "executing" and m["data"]["node"] == "9"))
    assert types[at - 1] == "progress"  # ComfyUI's progress message comes with it


def test_clients_without_preview_metadata_get_legacy_previews(live: LiveServer) -> None:
    _, messages = asyncio.run(_run_one(live, metadata=False))
    frames = [m for m in messages if isinstance(m, bytes)]
    assert frames
    kind, image_format = struct.unpack(">II", frames[0][:8])
    assert (kind, image_format) == (1, 1)  # PREVIEW_IMAGE, JPEG
    assert frames[0][8:10] == b"\xff\xd8"


def test_history_and_jobs_listing(live: LiveServer, http: httpx.Client) -> None:
    prompt_id, _ = asyncio.run(_run_one(live, metadata=True))
    entry = http.get(f"/history/{prompt_id}").json()[prompt_id]
    _number, pid, prompt, extra, outputs = entry["prompt"]
    assert pid == prompt_id and prompt["3"]["class_type"] == "KSampler" and outputs == ["9"]
    assert "create_time" in extra and entry["status"]["status_str"] == "success"
    assert entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_success"]
    assert entry["outputs"]["9"]["images"][0]["filename"].endswith(".png")
    assert http.get("/api/history/" + prompt_id).json() == http.get("/history/" + prompt_id).json()
    assert http.get("/history/" + str(uuid.uuid4())).json() == {}
    last = http.get("/history", params={"max_items": 1}).json()
    assert list(last) == [prompt_id]

    listing = http.get("/api/jobs", params={"status": "completed", "limit": 200}).json()
    assert listing["pagination"]["limit"] == 200
    job = next(j for j in listing["jobs"] if j["id"] == prompt_id)
    assert job["status"] == "completed" and isinstance(job["create_time"], int)
    assert job["outputs_count"] == 1 and job["preview_output"]["nodeId"] == "9"
    assert job["execution_end_time"] >= job["execution_start_time"]
    detail = http.get(f"/api/jobs/{prompt_id}").json()
    assert detail["workflow"]["prompt"]["9"]["class_type"] == "SaveImage"
    assert detail["outputs"]["9"]["images"][0]["type"] == "output"
    # ComfyUI's job detail carries the history's status, its messages included
    assert detail["execution_status"] == entry["status"]
    assert [m[0] for m in detail["execution_status"]["messages"]] == ["execution_start",
                                                                      "execution_success"]
    assert http.get(f"/api/jobs/{uuid.uuid4()}").status_code == 404
    paged = http.get("/api/jobs", params={"limit": 1, "offset": 0}).json()
    assert len(paged["jobs"]) == 1 and paged["pagination"]["total"] >= 2
    assert paged["pagination"]["has_more"] is True

    # Clearing history hides entries from the listing; the job itself stays readable.
    assert http.post("/history", json={"delete": [prompt_id]}).status_code == 200
    assert prompt_id not in http.get("/history").json()
    assert http.get(f"/api/jobs/{prompt_id}").status_code == 200


@pytest.mark.parametrize("query, message", [
    ({"status": "done"}, "Invalid status value(s): done"),
    ({"limit": "0"}, "limit must be between 1 and 10000"),
    ({"limit": str(10**20)}, "limit must be between 1 and 10000"),
    ({"limit": "x"}, "limit must be an integer"),
    ({"sort_by": "name"}, "sort_by"),
    ({"sort_order": "up"}, "sort_order"),
])  # fmt: skip
def test_jobs_listing_refuses_bad_queries(http: httpx.Client, query: dict, message: str) -> None:
    reply = http.get("/api/jobs", params=query)
    assert reply.status_code == 400 and message in reply.json()["error"]


def test_prompt_errors_are_comfyui_shaped(http: httpx.Client) -> None:
    no_prompt = http.post("/prompt", json={"client_id": "x"})
    assert no_prompt.status_code == 400
    assert no_prompt.json()["error"]["type"] == "no_prompt"
    bad_id = http.post("/prompt", json={"prompt": txt2img(), "prompt_id": "not-a-uuid"})
    assert bad_id.json()["error"]["type"] == "invalid_prompt_id"
    unknown = http.post("/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert unknown.status_code == 400 and unknown.json() == {  # ComfyUI's answer, exactly
        "error": {"type": "missing_node_type",
                  "message": "Node 'Nope' not found. The custom node may not be installed.",
                  "details": "Node ID '#1'",
                  "extra_info": {"node_id": "1", "class_type": "Nope", "node_title": "Nope"}},
        "node_errors": {}}  # fmt: skip
    workflow = txt2img()
    workflow["3"]["inputs"]["steps"] = "many"
    wrong = http.post("/prompt", json={"prompt": workflow})
    assert wrong.status_code == 400
    errors = wrong.json()["node_errors"]["3"]["errors"]
    assert errors[0]["extra_info"]["input_name"] == "steps"
    malformed = http.post("/prompt", content=b"{not json",
                          headers={"content-type": "application/json"})  # fmt: skip
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_json"
    chosen = str(uuid.uuid4())
    ok = http.post("/api/prompt", json={"prompt": txt2img(steps=1), "prompt_id": chosen})
    assert ok.status_code == 200 and ok.json()["prompt_id"] == chosen


def test_queue_delete_and_interrupt(live: LiveServer, http: httpx.Client) -> None:
    jobs = live.server.jobs
    first = http.post("/prompt", json={"prompt": txt2img(steps=2000, seed=5)}).json()["prompt_id"]
    wait_for(lambda: jobs.get(first).state.value == "running")
    second = http.post("/prompt", json={"prompt": txt2img(steps=5, seed=6)}).json()["prompt_id"]
    queue = http.get("/queue").json()
    assert [item[1] for item in queue["queue_running"]] == [first]
    assert second in [item[1] for item in queue["queue_pending"]]
    assert http.get("/prompt").json()["exec_info"]["queue_remaining"] >= 2
    assert http.post("/queue", json={"delete": [second]}).status_code == 200
    assert second not in [item[1] for item in http.get("/queue").json()["queue_pending"]]
    assert jobs.get(second).state.value == "aborted"

    assert http.post("/interrupt", json={"prompt_id": str(uuid.uuid4())}).status_code == 200
    assert jobs.get(first).state.value == "running"  # another prompt's id: nothing happens
    assert http.post("/interrupt", json={"prompt_id": first}).status_code == 200
    wait_for(lambda: jobs.get(first).state.value == "aborted")
    entry = http.get(f"/history/{first}").json()[first]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    cancelled = http.get("/api/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert first in [j["id"] for j in cancelled]
    assert http.post(f"/api/jobs/{first}/cancel").json() == {"cancelled": False}
    bad = http.post("/api/jobs/cancel", json={"job_ids": ["nope"]})
    assert bad.status_code == 400 and bad.json()["invalid_ids"] == ["nope"]


def test_a_prompt_is_always_in_the_queue_or_in_history(live: LiveServer) -> None:
    """ComfyUI's invariant while workers take the prompts: once its POST has answered, a
    prompt is in the queue (running or pending) or, having ended, in the history. A
    second client reads the queue over and over while the first submits."""
    import threading

    ids: list[str] = []
    missing: list[str] = []
    done = threading.Event()

    def watch() -> None:
        with live.client() as http:
            while not done.is_set():
                known = list(ids)
                queue = http.get("/queue").json()
                queued = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
                for prompt_id in known:  # a prompt only moves forward: else it ended
                    if prompt_id not in queued and \
                            prompt_id not in http.get(f"/history/{prompt_id}").json():
                        missing.append(prompt_id)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with live.client() as http:
            for seed in range(30):
                answer = http.post("/prompt", json={"prompt": txt2img(steps=1, seed=seed)})
                ids.append(answer.json()["prompt_id"])
        for prompt_id in ids:
            live.server.jobs.wait(prompt_id, timeout=120)
    finally:
        done.set()
        watcher.join(60)
    assert missing == []


def test_node_definitions_and_system(http: httpx.Client) -> None:
    info = http.get("/object_info").json()
    sampler = info["KSampler"]
    assert sampler["output"] == ["LATENT"] and "seed" in sampler["input"]["required"]
    assert "tiny_sd15.safetensors" in info["CheckpointLoaderSimple"]["input"]["required"][
        "ckpt_name"][0]  # fmt: skip
    assert http.get("/api/object_info/KSampler").json() == {"KSampler": sampler}
    assert http.get("/object_info/NoSuchNode").json() == {}
    stats = http.get("/api/system_stats").json()
    system = stats["system"]
    comfyui_keys = {"os", "ram_total", "ram_free", "comfyui_version", "required_frontend_version",
                    "installed_templates_version", "required_templates_version",
                    "comfy_package_versions", "python_version", "pytorch_version",
                    "embedded_python", "deploy_environment", "argv"}  # ComfyUI v0.27's
    assert set(system) == comfyui_keys | {"midrun_version"}
    assert system["comfyui_version"] == "0.27.0" and system["midrun_version"] == midrun_version
    assert system["argv"][:len(sys.argv)] == sys.argv  # this process's own (the server's)
    from importlib.metadata import version

    frontend = version("comfyui-frontend-package")
    assert system["required_frontend_version"] == frontend
    assert {"name": "comfyui-frontend-package", "installed": frontend,
            "required": frontend} in system["comfy_package_versions"]
    assert {"name", "type", "index", "vram_total", "vram_free"} <= set(stats["devices"][0])
    assert http.get("/features").json()["supports_preview_metadata"] is True


def test_midrun_events_reach_websocket_and_sse_clients(live: LiveServer) -> None:
    jobs = live.server.jobs

    async def scenario() -> tuple[list[str], list[str]]:
        ws = await _connect(live, uuid.uuid4().hex, metadata=True)
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            job_id = (await http.post("/prompt", json={"prompt": txt2img(steps=400)})).json()[
                "prompt_id"]  # fmt: skip
            sse_kinds: list[str] = []

            async def read_sse() -> None:
                async with http.stream("GET", "/api/events", params={"job_id": job_id}) as s:
                    async for line in s.aiter_lines():
                        if line.startswith("event: "):
                            sse_kinds.append(line[7:])
                            if line == "event: midrun.aborted":
                                return

            reader = asyncio.ensure_future(read_sse())
            await asyncio.to_thread(wait_for, lambda: jobs.get(job_id).progress.get("step"))
            await asyncio.to_thread(jobs.pause, job_id)
            await asyncio.to_thread(wait_for, lambda: jobs.get(job_id).state.value == "paused")
            await asyncio.to_thread(jobs.resume, job_id)
            await asyncio.to_thread(wait_for, lambda: jobs.get(job_id).state.value == "running")
            await asyncio.to_thread(jobs.abort, job_id, "enough")
            await asyncio.wait_for(reader, 30)
        kinds: list[str] = []
        while "midrun.aborted" not in kinds:
            raw = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(raw, str):
                kinds.append(json.loads(raw)["type"])
        await ws.close()
        return kinds, sse_kinds

    ws_kinds, sse_kinds = asyncio.run(scenario())
    for kinds in (ws_kinds, sse_kinds):
        control = [k for k in kinds if k in ("midrun.pausing", "midrun.paused", "midrun.resumed",
                                             "midrun.aborted")]  # fmt: skip
        assert control == ["midrun.pausing", "midrun.paused", "midrun.resumed", "midrun.aborted"]


def test_control_over_midrun_routes_with_events_in_order(live: LiveServer) -> None:
    """Pause, edit (two fields), undo one, resume, abort with a reason, all over HTTP; a
    WebSocket client sees midrun's events in that order, and the job ends aborted with
    the reason and the kept edit applied."""
    jobs = live.server.jobs

    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        ws = await _connect(live, uuid.uuid4().hex, metadata=True)
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            job_id = (await http.post("/prompt", json={"prompt": txt2img(steps=600)})).json()[
                "prompt_id"]  # fmt: skip
            await asyncio.to_thread(wait_for, lambda: jobs.get(job_id).progress.get("step"))
            assert (await http.post(f"/api/jobs/{job_id}/pause")).status_code == 200
            await asyncio.to_thread(wait_for, lambda: jobs.get(job_id).state.value == "paused")
            edited = await http.put(f"/api/jobs/{job_id}/params", json={"edits": [
                {"node_id": "3", "input": "cfg", "value": 4.5},
                {"node_id": "6", "input": "text", "value": "a blue star"}]})  # fmt: skip
            assert edited.status_code == 200, edited.text
            cfg_edit, text_edit = edited.json()["edit_ids"]
            pending = edited.json()["modified_params"]
            assert pending["3.cfg"]["new"] == 4.5 and pending["6.text"]["modified_mid_run"]
            undone = await http.delete(f"/api/jobs/{job_id}/params/{text_edit}")
            assert undone.status_code == 200
            assert [e["id"] for e in undone.json()["pending"]] == [cfg_edit]
            conflict = await http.post(f"/api/jobs/{job_id}/pause")
            assert conflict.status_code == 409
            assert conflict.json()["error"]["state"] == "paused"
            assert (await http.post(f"/api/jobs/{job_id}/resume")).status_code == 200
            await asyncio.to_thread(wait_for, lambda: jobs.get(job_id).state.value == "running")
            aborted = await http.post(f"/api/jobs/{job_id}/abort", json={"reason": "too slow"})
            assert aborted.status_code == 200
        kinds: list[dict[str, Any]] = []
        while not any(k["type"] == "midrun.aborted" for k in kinds):
            raw = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(raw, str):
                message = json.loads(raw)
                if message["type"].startswith("midrun.") and \
                        message["data"].get("job_id") == job_id:  # fmt: skip
                    kinds.append(message)
        await ws.close()
        return job_id, kinds

    job_id, events = asyncio.run(scenario())
    wanted = ["midrun.pausing", "midrun.paused", "midrun.edited", "midrun.edited",
              "midrun.edit_undone", "midrun.resumed", "midrun.edit_applied", "midrun.aborted"]
    seen = [e["type"] for e in events if e["type"] in wanted]
    assert seen == wanted
    assert next(e for e in events if e["type"] == "midrun.aborted")["data"]["reason"] == "too slow"
    job = jobs.get(job_id)
    assert job.state.value == "aborted" and job.workflow["3"]["inputs"]["cfg"] == 4.5
    assert job.workflow["6"]["inputs"]["text"] != "a blue star"
    assert jobs.debug_state(job_id)["abort_reason"] == "too slow"
