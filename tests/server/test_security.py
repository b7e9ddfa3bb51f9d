"""Exposure rules: tokens off loopback (HTTP and WebSocket), request size limits, CORS
off unless configured, and events from a worker in another process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from midrun.server.config import ServerConfig
from tests.server.conftest import LiveServer, make_config, start_server, txt2img, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_auth_is_required_exactly_off_loopback() -> None:
    assert not ServerConfig(host="127.0.0.1").requires_auth
    assert not ServerConfig(host="::1").requires_auth
    assert ServerConfig(host="0.0.0.0").requires_auth
    assert ServerConfig(host="192.168.1.20").requires_auth
    assert ServerConfig(host="127.0.0.1", auth=True).requires_auth


def test_tokens_sizes_and_cors(tmp_path: Path) -> None:
    live = start_server(make_config(tmp_path, auth=True, workers=False, max_body_bytes=4096,
                                    cors_origins=("http://studio.example",)))  # fmt: skip
    try:
        token = live.server.users.create("ana", "creator")
        anonymous = httpx.get(live.url + "/api/system_stats")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "unauthorized"
        assert httpx.get(live.url + "/api/system_stats",
                         headers={"Authorization": "Bearer wrong"}).status_code == 401  # fmt: skip
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(live.url + "/api/system_stats", headers=bearer).status_code == 200
        assert httpx.get(live.url + "/").status_code == 200  # the page itself is static

        async def sockets() -> None:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with websockets.connect(live.ws_url + "/ws") as ws:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            async with websockets.connect(f"{live.ws_url}/ws?token={token}") as ws:
                assert json.loads(await ws.recv())["type"] == "status"

        asyncio.run(sockets())

        big = {"prompt": txt2img(), "padding": "x" * 5000}
        too_large = httpx.post(live.url + "/prompt", json=big, headers=bearer)
        assert too_large.status_code == 413
        assert too_large.json()["error"]["type"] == "payload_too_large"

        allowed = httpx.options(live.url + "/api/system_stats", headers={
            "Origin": "http://studio.example", "Access-Control-Request-Method": "GET"})
        assert allowed.headers.get("access-control-allow-origin") == "http://studio.example"
        other = httpx.options(live.url + "/api/system_stats", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
        assert other.headers.get("access-control-allow-origin") is None
    finally:
        live.stop()


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    live = start_server(make_config(tmp_path, workers=False))
    try:
        reply = httpx.get(live.url + "/api/system_stats",
                          headers={"Origin": "http://studio.example"})  # fmt: skip
        assert reply.status_code == 200
        assert "access-control-allow-origin" not in reply.headers
    finally:
        live.stop()


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from midrun.jobs.service import Jobs
    from midrun.jobs.worker import WorkerPool
    from midrun.diffusion.runtime import DiffusionRuntime
    from midrun.nodes import builtin_registry
    from midrun.nodes.comfy_impl import attach
    from midrun.store.database import Database

    data, models = Path(sys.argv[1]), Path(sys.argv[2])
    runtime = DiffusionRuntime.create(models, device="cpu", output_dir=data / "output")
    registry = attach(builtin_registry(models), runtime)
    jobs = Jobs(Database.open(data_dir=data), registry, data_dir=data, runtime=runtime)
    with WorkerPool(jobs, ["cpu"]):
        print("ready", flush=True)
        sys.stdin.readline()
""")


@contextlib.contextmanager
def worker_in_another_process(config: ServerConfig) -> Iterator[None]:
    """A worker process sharing only the database (and model folder) with the server."""
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(config.data_dir),
                               str(config.models_dir)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        yield
    finally:
        if worker.stdin:
            worker.stdin.close()
        worker.wait(timeout=60)


def test_events_of_a_worker_in_another_process_reach_clients(tmp_path: Path) -> None:
    config = make_config(tmp_path, workers=False)
    live = start_server(config)
    try:

        async def scenario() -> list[str]:
            async with websockets.connect(f"{live.ws_url}/ws?clientId=remote") as ws:
                await ws.recv()
                async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
                    reply = await http.post("/prompt", json={"prompt": txt2img(steps=2000),
                                                             "client_id": "remote"})  # fmt: skip
                    job_id = reply.json()["prompt_id"]
                    jobs = live.server.jobs
                    await asyncio.to_thread(
                        wait_for, lambda: jobs.get(job_id).state.value == "running", 60)
                    await http.post(f"/api/jobs/{job_id}/pause")
                    await asyncio.to_thread(
                        wait_for, lambda: jobs.get(job_id).state.value == "paused", 60)
                    await http.post(f"/api/jobs/{job_id}/abort", json={"reason": "remote"})
                seen: list[str] = []
                deadline = time.monotonic() + 60
                # The abort is this process's (its message comes at once); the other
                # process's "paused" arrives with the relay's next read of the log.
                while not {"execution_interrupted", "midrun.paused"} <= set(seen) \
                        and time.monotonic() < deadline:  # fmt: skip
                    raw = await asyncio.wait_for(ws.recv(), 60)
                    if isinstance(raw, str):
                        message = json.loads(raw)
                        if message["data"].get("remote") or not message["type"].startswith(
                                "midrun."):  # fmt: skip
                            seen.append(message["type"])
                return seen

        with worker_in_another_process(config):
            seen = asyncio.run(scenario())
        # "running" and "paused" were written by the other process's worker: they reach
        # this server's sockets only through the database; so does the ComfyUI message.
        assert "midrun.running" in seen and "midrun.paused" in seen
        assert "execution_interrupted" in seen
    finally:
        live.stop()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[LiveServer]:
    """A server that requires tokens, without workers (jobs stay queued)."""
    live = start_server(make_config(tmp_path, auth=True, workers=False))
    yield live
    live.stop()


def test_creators_see_only_their_own_jobs_through_comfyui_routes(guarded: LiveServer) -> None:
    live = guarded
    users = live.server.users
    headers = {name: {"Authorization": f"Bearer {users.create(name, role)}"}
               for name, role in (("ana", "creator"), ("bob", "creator"),
                                  ("root", "admin"))}  # fmt: skip
    clients = {name: live.client(headers=h) for name, h in headers.items()}
    ana, bob, root = clients["ana"], clients["bob"], clients["root"]
    queued = ana.post("/prompt", json={"prompt": txt2img(steps=1)}).json()["prompt_id"]
    ended = ana.post("/prompt", json={"prompt": txt2img(steps=1)}).json()["prompt_id"]
    assert ana.post(f"/api/jobs/{ended}/abort").status_code == 200

    def queue_ids(http: httpx.Client) -> set[str]:
        queue = http.get("/queue").json()
        return {item[1] for item in queue["queue_running"] + queue["queue_pending"]}

    for http, sees in ((ana, True), (root, True), (bob, False)):
        assert (queued in queue_ids(http)) is sees
        listed = {j["id"] for j in http.get("/api/jobs").json()["jobs"]}
        assert ({queued, ended} <= listed) is sees
        assert bool(listed & {queued, ended}) is sees
        assert (http.get(f"/api/jobs/{queued}").status_code == 200) is sees
        assert (ended in http.get("/history").json()) is sees
        assert (ended in http.get(f"/history/{ended}").json()) is sees
    assert bob.get(f"/api/jobs/{queued}").json() == {"error": "Job not found"}

    assert bob.post("/free", json={"unload_models": True}).status_code == 403
    assert root.post("/free", json={"unload_models": True}).status_code == 200
    for http in clients.values():
        http.close()


def test_creators_fetch_only_their_own_outputs_through_view(tmp_path: Path) -> None:
    live = start_server(make_config(tmp_path, auth=True))
    try:
        users = live.server.users
        ana, bob, root = (live.client(headers={"Authorization": f"Bearer {users.create(n, r)}"})
                          for n, r in (("ana", "creator"), ("bob", "creator"),
                                       ("root", "admin")))  # fmt: skip
        job_id = ana.post("/prompt", json={"prompt": txt2img(steps=1)}).json()["prompt_id"]
        done = live.server.jobs.wait(job_id, timeout=120)
        assert done.state.value == "completed", done.error
        image = done.outputs["9"]["images"][0]
        query = {"filename": image["filename"], "subfolder": image["subfolder"],
                 "type": "output"}  # fmt: skip
        assert ana.get("/view", params=query).content.startswith(b"\x89PNG")
        assert root.get("/view", params=query).status_code == 200
        refused = bob.get("/view", params=query)
        assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found"
        assert bob.get("/view", params={**query, "preview": "webp;50"}).status_code == 404
        (live.server.config.output_dir / "loose.png").write_bytes(image_bytes())
        loose = {"filename": "loose.png", "type": "output"}
        assert (ana.get("/view", params=loose).status_code,
                root.get("/view", params=loose).status_code) == (404, 200)  # fmt: skip
        for http in (ana, bob, root):
            http.close()
    finally:
        live.stop()


def image_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_token_values_never_reach_the_access_log() -> None:
    import logging

    from uvicorn.logging import AccessFormatter

    from midrun.server.auth import RedactTokens

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/ws?clientId=c&token=mr_secret&x=1",
                                "1.1", 101), None)  # fmt: skip
    assert RedactTokens().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert "mr_secret" not in line
    assert "token=[redacted]&x=1" in line


def test_the_users_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    from midrun.server.auth import Users

    path = tmp_path / "auth" / "users.json"
    server_side, command_line = Users(path), Users(path)
    token = command_line.create("ana", "creator")
    assert server_side.verify(token).name == "ana"
    assert server_side.verify("mr_wrong") is None
    command_line.delete("ana")  # `midrun users remove` in another process
    assert server_side.verify(token) is None
    again = command_line.create("ana", "admin")
    assert server_side.verify(again).role == "admin"


def test_creators_cannot_overwrite_or_fill_the_output_folder(guarded: LiveServer) -> None:
    live = guarded
    users = live.server.users
    ana = live.client(headers={"Authorization": f"Bearer {users.create('ana')}"})
    bob = live.client(headers={"Authorization": f"Bearer {users.create('bob')}"})

    def upload(http: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
        return http.post("/upload/image", files={"image": ("shot.png", data, "image/png")},
                         data=fields)  # fmt: skip

    as_output = upload(bob, b"bob's", type="output", overwrite="true")
    assert as_output.status_code == 403
    assert not (live.server.config.output_dir / "shot.png").exists()
    assert upload(ana, b"ana's").json()["name"] == "shot.png"
    replaced = upload(bob, b"bob's", overwrite="true")
    assert replaced.status_code == 200 and replaced.json()["name"] != "shot.png"
    assert (live.server.config.upload_dir / "shot.png").read_bytes() == b"ana's"
    ana.close()
    bob.close()


def test_a_client_id_stays_with_the_user_who_opened_it(guarded: LiveServer) -> None:
    live = guarded
    users = live.server.users
    ana, bob = users.create("ana"), users.create("bob")

    async def scenario() -> None:
        url = f"{live.ws_url}/ws?clientId=ana-socket&token="
        async with websockets.connect(url + ana) as mine:
            hello = json.loads(await mine.recv())
            assert hello["data"]["sid"] == "ana-socket"
            async with websockets.connect(url + bob) as theirs:
                taken = json.loads(await theirs.recv())
                assert taken["type"] == "status"
                assert taken["data"]["sid"] not in ("ana-socket", None)
                await mine.send(json.dumps({"type": "ping"}))  # still open
                assert mine.close_code is None
        async with websockets.connect(url + ana) as again:  # her reconnect keeps it
            assert json.loads(await again.recv())["data"]["sid"] == "ana-socket"

    asyncio.run(scenario())
