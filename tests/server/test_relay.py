"""A page fed by a worker in another process hears the same events, under the same
names, as one fed by this process's workers: the audit log and the bus share one
vocabulary (midrun.core.events.EventKind), and the relay forwards it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import websockets

from tests.server.conftest import make_config, start_server, txt2img, wait_for
from tests.server.test_security import worker_in_another_process


def test_a_page_fed_by_another_process_sees_running_pausing_and_paused(tmp_path: Path) -> None:
    config = make_config(tmp_path, workers=False)
    live = start_server(config)
    try:
        jobs = live.server.jobs

        async def scenario() -> tuple[str, list[dict]]:
            heard: list[dict] = []
            async with websockets.connect(f"{live.ws_url}/ws?clientId=page") as ws:
                await ws.recv()
                async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
                    reply = await http.post("/prompt", json={"prompt": txt2img(steps=2000),
                                                             "client_id": "page"})  # fmt: skip
                    job_id = reply.json()["prompt_id"]
                    await asyncio.to_thread(
                        wait_for, lambda: jobs.get(job_id).state.value == "running", 60)
                    # The other process's worker stops the job itself (no request from
                    # this process): its "pausing" is written there and relayed here.
                    made = await http.post(f"/api/jobs/{job_id}/breakpoints", json={
                        "node_id": "3", "position": "step", "condition": "step >= 1"})
                    assert made.status_code == 201, made.text
                    names: set[str] = set()
                    while "midrun.paused" not in names:
                        raw = await asyncio.wait_for(ws.recv(), 60)
                        if not isinstance(raw, str):
                            continue
                        message = json.loads(raw)
                        if message["data"].get("prompt_id", message["data"].get("job_id")) \
                                != job_id:  # fmt: skip
                            continue
                        heard.append(message)
                        names.add(message["type"])
                    await http.post(f"/api/jobs/{job_id}/abort", json={"reason": "done"})
            return job_id, heard

        with worker_in_another_process(config):
            job_id, heard = asyncio.run(scenario())
        remote = [m["type"] for m in heard if m["data"].get("remote")]
        assert remote[:1] == ["midrun.running"], remote
        assert remote.index("midrun.running") < remote.index("midrun.pausing") \
            < remote.index("midrun.paused"), remote  # fmt: skip
        pausing = next(m["data"] for m in heard if m["type"] == "midrun.pausing")
        assert pausing["by"] == "breakpoint" and pausing["job_id"] == job_id
        assert "midrun.breakpoint_hit" in remote
        # The ComfyUI message for the prompt's start comes from the remote "running" too.
        assert "execution_start" in [m["type"] for m in heard]
        assert jobs.wait(job_id, timeout=60).state.value == "aborted"
    finally:
        live.stop()
