"""The canvas in a real browser: Debian's Chromium (``/usr/bin/chromium``, never a
downloaded one) driven by Playwright, against a real midrun server with the shipped demo
model, SQLite in a temporary folder. One browser and one server per module; each test has
its own browser context and page, and the server is settled before and after it (no job
left running, no breakpoint, default settings), so each test runs alone or in any order.
Tests save screenshots under ``artifacts/ui/`` (or ``$MIDRUN_ARTIFACTS``) and assert they
are not blank."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from midrun.core.errors import MidrunError
from midrun.server.config import ServerConfig
from tests.server.conftest import FAST, LiveServer, free_port, start_server

CHROMIUM = os.environ.get("MIDRUN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MIDRUN_ARTIFACTS", Path(__file__).parents[2] / "artifacts" / "ui"))
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update"]  # fmt: skip
VIEWPORT = {"width": 1440, "height": 900}


def _browser_or_fail() -> None:
    if os.environ.get("MIDRUN_SKIP_BROWSER") == "1":
        pytest.skip("MIDRUN_SKIP_BROWSER=1")
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set "
                    "MIDRUN_SKIP_BROWSER=1 to leave the browser tests out)")  # fmt: skip


@dataclass
class Canvas:
    """One page of the canvas, what it logged, and the requests it made."""

    page: Any
    server: LiveServer
    console: list[tuple[str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        return [text for kind, text in self.console if kind in ("error", "pageerror")]

    def shot(self, name: str) -> Path:
        """A screenshot that must show something: many colours, not one flat fill."""
        from PIL import Image

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        data = self.page.screenshot(path=str(path))
        assert_not_blank(Image.open(io.BytesIO(data)), name)
        return path

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def wait_js(self, script: str, arg: Any = None, timeout: float = 60_000) -> Any:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            return self.page.wait_for_function(script, arg=arg, timeout=timeout).json_value()
        except PlaywrightTimeout:
            jobs = self.js("() => JSON.stringify(window.midrun.store.sorted().slice(0, 6))")
            raise AssertionError(f"timed out waiting for {script} ({arg!r}); the page's "
                                 f"jobs: {jobs}") from None


def assert_not_blank(image: Any, name: str) -> None:
    small = image.convert("RGB").resize((160, 100))
    colours = len(small.getcolors(maxcolors=small.width * small.height) or [])
    extrema = small.convert("L").getextrema()
    assert colours > 50 and extrema[1] - extrema[0] > 60, (
        f"screenshot {name} looks blank ({colours} colours, range {extrema})")


def demo_config(root: Path) -> ServerConfig:
    """An empty models folder: the shipped demo model is what the server offers."""
    (root / "models").mkdir()
    return ServerConfig(host="127.0.0.1", port=free_port(), data_dir=root / "data",
                        models_dir=root / "models", devices=("cpu",))  # fmt: skip


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; each test starts from a settled one (see ``settle``)."""
    _browser_or_fail()
    server = start_server(demo_config(tmp_path_factory.mktemp("canvas")), FAST)
    yield server
    server.stop()


@pytest.fixture
def own_demo(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of the test's own (for a test that stops and restarts it)."""
    _browser_or_fail()
    holder = {"server": start_server(demo_config(tmp_path), FAST)}
    yield holder["server"]
    holder["server"].stop()


# Settings the tests change (stored by the server, per user): their defaults.
SETTINGS = {"midrun.Preview.EverySteps": 1}


def settle(server: LiveServer) -> None:
    """What one test leaves on the shared server does not reach the next: every job not
    ended is aborted (and waited for, so the worker is free), the pipeline runs, no
    breakpoint is left on a saved workflow and the changed settings are back to their
    defaults."""
    from midrun.jobs import pipeline

    service = server.server.jobs
    if pipeline.status(service)["state"] != "running":
        pipeline.resume_pipeline(service, actor="test settle")
    for job in service.list():
        if not job.state.terminal:
            with contextlib.suppress(MidrunError):  # ended meanwhile, or abort pending
                service.abort(job.id, "test over")
    for job in service.list():
        service.wait(job.id, timeout=120)
    with server.client() as http:
        for saved in _items(http.get("/api/workflows").json(), "workflows"):
            listed = http.get(f"/api/workflows/{saved['id']}/breakpoints").json()
            for bp in _items(listed, "breakpoints"):
                http.delete(f"/api/breakpoints/{bp['id']}").raise_for_status()
        for name, value in SETTINGS.items():
            http.post(f"/api/settings/{name}", json=value).raise_for_status()


def _items(body: Any, key: str) -> list[dict[str, Any]]:
    return body[key] if isinstance(body, dict) else body


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module; each test gets its own context (cookies, storage)."""
    from playwright.sync_api import sync_playwright

    _browser_or_fail()
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield instance
        instance.close()


def open_canvas(browser: Any, server: LiveServer) -> Canvas:
    """A fresh browser context and page on ``server``, once the demo workflow is on the
    canvas and the extension's event stream is connected."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    canvas = Canvas(page, server)
    page.on("console", lambda m: canvas.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: canvas.console.append(("pageerror", str(e))))
    page.on("request", lambda r: canvas.requests.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_function("() => window.midrun?.store?.connected"
                           " && window.app?.graph?.nodes?.length > 0",
                           timeout=60_000)  # fmt: skip
    return canvas


@pytest.fixture
def canvas(browser: Any, live_demo: LiveServer) -> Iterator[Canvas]:
    """A page of its own for each test, on the module's server settled before and after."""
    settle(live_demo)
    page = open_canvas(browser, live_demo)
    try:
        yield page
    finally:
        page.page.context.close()
        settle(live_demo)
