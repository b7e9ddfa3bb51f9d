"""The server under load: a real midrun server (uvicorn, in its own process, one CPU
worker, the tiny SD1.5 checkpoint, SQLite) and ``--clients`` concurrent clients for
``--seconds`` on loopback, while one long txt2img job steps.

* event_latency_p99_ms: a job event emitted on the server's bus (``midrun.progress``,
  stamped with the server's clock as it is emitted) -> received by a WebSocket client;
* prompt_post_p99_ms: ``POST /prompt`` (a validated txt2img, queued) under that load;
* pause_roundtrip_p99_ms: ``POST /api/jobs/{id}/pause`` on the running job -> its
  ``midrun.paused`` received on the WebSocket (includes finishing the step in flight;
  step_ms gives the scale);
* requests_per_s: cheap GETs (``/api/jobs?limit=20``, ``GET /prompt``) answered per
  second, all clients together.

The clients: half poll the GETs, a quarter post prompts (each ``--post-interval``), one
pauses and resumes the long job, the rest only watch the WebSocket; every client also
keeps a WebSocket open. Bounded: the load phase lasts ``--seconds``, everything
``--budget`` seconds at most.

    python bench/api_latency.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from report import emit, percentile  # bench/report.py (benchmarks run as scripts)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.diffusion.conftest import SD15_CKPT, txt2img  # noqa: E402

# -- the server, in a child process ------------------------------------------------------


def serve_child(root: Path, port: int) -> None:
    """Run the server; every bus event gets ``emitted_at`` (server clock) as it is
    emitted, before the hub (subscribed at startup, after this) forwards it."""
    import uvicorn

    from midrun.jobs.settings import JobSettings
    from midrun.server.app import create_app
    from midrun.server.config import ServerConfig
    from midrun.server.state import Server

    config = ServerConfig(host="127.0.0.1", port=port, data_dir=root / "data",
                          models_dir=root / "models", devices=("cpu",))  # fmt: skip
    server = Server(config, settings=JobSettings(checkpoint_every_seconds=0))
    server.jobs.bus.subscribe(lambda event: event.__setitem__("emitted_at", time.time()))
    uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port,
                                  log_level="warning", ws="websockets-sansio",
                                  lifespan="on")).run()  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    from midrun.diffusion import testing
    from midrun.diffusion.families import SD15

    testing.write_single_file(root / "models" / "checkpoints" / SD15_CKPT, SD15)
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--child", str(root), str(port)],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the server exited with {child.returncode}")
        try:
            if httpx.get(url + "/prompt", timeout=1).status_code == 200:
                return child, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    child.kill()
    raise RuntimeError("the server did not start in time")


# -- the load ----------------------------------------------------------------------------


@dataclass
class Results:
    event_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    pause_ms: list[float] = field(default_factory=list)
    gets: int = 0
    emitted: list[float] = field(default_factory=list)  # the long job's step stamps
    posted: list[str] = field(default_factory=list)


class Watcher:
    """One WebSocket client: records event latency, and lets its owner wait for events."""

    def __init__(self, url: str, results: Results, steps_of: str | None = None) -> None:
        self.url = url.replace("http://", "ws://") + f"/ws?clientId={uuid.uuid4().hex}"
        self.results = results
        self.steps_of = steps_of  # the job whose step times this client records
        self.waiters: list[tuple[str, str, asyncio.Future[float]]] = []
        self.ws: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            self.ws = ws
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                received = time.time()
                if isinstance(raw, str):
                    self.on_message(json.loads(raw), received)

    def on_message(self, message: dict[str, Any], received: float) -> None:
        kind, data = message.get("type", ""), message.get("data") or {}
        if kind == "midrun.progress" and "emitted_at" in data:
            self.results.event_ms.append((received - data["emitted_at"]) * 1000)
            if data.get("job_id") == self.steps_of:
                self.results.emitted.append(data["emitted_at"])
        for waiter in list(self.waiters):
            want_kind, job_id, future = waiter
            if kind == want_kind and data.get("job_id") == job_id and not future.done():
                future.set_result(time.perf_counter())
                self.waiters.remove(waiter)

    def expect(self, kind: str, job_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((kind, job_id, future))
        return future


async def getter(http: httpx.AsyncClient, results: Results, stop: asyncio.Event) -> None:
    paths = ("/api/jobs?limit=20", "/prompt")
    i = 0
    while not stop.is_set():
        reply = await http.get(paths[i % 2])
        reply.raise_for_status()
        results.gets += 1
        i += 1


async def poster(http: httpx.AsyncClient, results: Results, stop: asyncio.Event,
                 interval: float) -> None:  # fmt: skip
    workflow = txt2img(steps=1, seed=7)
    while not stop.is_set():
        start = time.perf_counter()
        reply = await http.post("/prompt", json={"prompt": workflow})
        results.post_ms.append((time.perf_counter() - start) * 1000)
        reply.raise_for_status()
        results.posted.append(reply.json()["prompt_id"])
        await asyncio.sleep(interval)


async def pauser(http: httpx.AsyncClient, watcher: Watcher, job_id: str, results: Results,
                 stop: asyncio.Event) -> None:  # fmt: skip
    while not stop.is_set():
        stepped = watcher.expect("midrun.progress", job_id)
        await asyncio.wait_for(stepped, 60)
        paused = watcher.expect("midrun.paused", job_id)
        start = time.perf_counter()
        (await http.post(f"/api/jobs/{job_id}/pause")).raise_for_status()
        results.pause_ms.append((await asyncio.wait_for(paused, 60) - start) * 1000)
        (await http.post(f"/api/jobs/{job_id}/resume", json={"front": True})).raise_for_status()


async def load(url: str, clients: int, seconds: float, post_interval: float) -> Results:
    results = Results()
    stop, stopped = asyncio.Event(), asyncio.Event()
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        job_id = (await http.post("/prompt", json={"prompt": txt2img(steps=10_000)})).json()[
            "prompt_id"]  # fmt: skip
        watchers = [Watcher(url, results, job_id if i == 0 else None) for i in range(clients)]
        sockets = [asyncio.create_task(w.run(stopped)) for w in watchers]
        await asyncio.wait_for(watchers[0].expect("midrun.progress", job_id), 60)  # warm
        results.event_ms.clear()
        results.emitted.clear()
        gets, posts = clients // 2, max(1, clients // 4)
        tasks = [asyncio.create_task(getter(http, results, stop)) for _ in range(gets)]
        tasks += [asyncio.create_task(poster(http, results, stop, post_interval))
                  for _ in range(posts)]  # fmt: skip
        pausing = asyncio.create_task(pauser(http, watchers[-1], job_id, results, stop))
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        pausing.cancel()  # it may be waiting for the job's next step
        with contextlib.suppress(asyncio.CancelledError):
            await pausing
        elapsed = time.perf_counter() - start
        stopped.set()
        await asyncio.gather(*sockets)
        await http.post("/queue", json={"clear": True})
        await http.post(f"/api/jobs/{job_id}/abort", json={"reason": "bench over"})
    results.gets = round(results.gets / elapsed)  # per second, from here on
    return results


def figures(results: Results, args: argparse.Namespace) -> dict[str, Any]:
    steps = [b - a for a, b in zip(results.emitted, results.emitted[1:], strict=False)]
    return {
        "event_latency_p99_ms": round(percentile(results.event_ms, 0.99), 2),
        "event_latency_p50_ms": round(percentile(results.event_ms, 0.5), 2),
        "prompt_post_p99_ms": round(percentile(results.post_ms, 0.99), 1),
        "prompt_post_p50_ms": round(percentile(results.post_ms, 0.5), 1),
        "pause_roundtrip_p99_ms": round(percentile(results.pause_ms, 0.99), 1),
        "pause_roundtrip_p50_ms": round(percentile(results.pause_ms, 0.5), 1),
        "requests_per_s": results.gets,
        "step_ms": round(statistics.median(steps) * 1000, 1) if steps else None,
        "events": len(results.event_ms),
        "prompts": len(results.post_ms),
        "pauses": len(results.pause_ms),
        "clients": args.clients,
        "seconds": args.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--post-interval", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=85.0, help="the whole run, at most")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(Path(args.child[0]), int(args.child[1]))
        return
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="midrun-api-bench-") as root:
        child, url = start_server(Path(root), timeout=args.budget / 2)
        try:
            left = args.budget - (time.monotonic() - began) - 5
            results = asyncio.run(asyncio.wait_for(
                load(url, args.clients, args.seconds, args.post_interval), left))  # fmt: skip
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    emit(figures(results, args), args.json)


if __name__ == "__main__":
    main()
