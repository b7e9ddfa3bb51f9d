"""A real midrun server per test module: uvicorn on a free loopback port in a thread,
the tiny SD1.5 checkpoint in its models folder, SQLite in a temporary data directory.
Tests talk to it over real HTTP (httpx) and WebSocket (websockets) connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from midrun.diffusion import testing
from midrun.diffusion.families import SD15
from midrun.jobs.settings import JobSettings
from midrun.server.app import create_app
from midrun.server.config import ServerConfig
from midrun.server.state import Server
from tests.diffusion.conftest import SD15_CKPT as CKPT
from tests.diffusion.conftest import txt2img  # noqa: F401  (re-exported for server tests)

FAST = JobSettings(poll_interval=0.01, progress_interval=0.05, heartbeat_seconds=0.2,
                   worker_timeout=2.0, pipeline_pause_timeout=10.0)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    server: Server
    url: str
    thread: threading.Thread
    uvicorn: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


def start_server(config: ServerConfig, settings: JobSettings = FAST, **kwargs: Any) -> LiveServer:
    import uvicorn

    server = Server(config, settings=settings, **kwargs)
    app = create_app(server)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port,
                                       log_level="warning", ws="websockets-sansio",
                                       lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return LiveServer(server, f"http://127.0.0.1:{config.port}", thread, uv)


def make_config(root: Path, **overrides: Any) -> ServerConfig:
    models = root / "models"
    checkpoint = models / "checkpoints" / CKPT
    if not checkpoint.exists():
        testing.write_single_file(checkpoint, SD15)
    base = ServerConfig(host="127.0.0.1", port=free_port(), data_dir=root / "data",
                        models_dir=models, devices=("cpu",))  # fmt: skip
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module (auth off: loopback)."""
    server = start_server(make_config(tmp_path_factory.mktemp("server")))
    yield server
    server.stop()


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")
