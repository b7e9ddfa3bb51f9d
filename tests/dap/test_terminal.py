"""``midrun debug`` driven through a pseudo-terminal, as a person types: readline
completion of node names, breakpoints, stepping, values, Ctrl-C to pause, a mid-run
edit of a workflow at a sampler step and its undo."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class Terminal:
    """A child process on a pseudo-terminal: type lines, wait for text (bounded)."""

    def __init__(self, *args: str, home: Path) -> None:
        env = {**os.environ, "HOME": str(home), "TERM": "xterm", "HF_HUB_OFFLINE": "1",
               "MIDRUN_DEBUG_HISTORY": str(home / "history"), "COLUMNS": "200"}  # fmt: skip
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "midrun.cli.main", *args], env)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until ``text`` has appeared since the last expect; returns what came."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {text!r}; the terminal shows:\n{self.seen[-3000:]}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the debugger exited before {text!r}:\n{self.seen[-3000:]}"
                self.seen += ANSI.sub("", chunk.decode("utf-8", "replace"))
        before, _, self.seen = self.seen.partition(text)
        return before + text

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str, then: str = "(midrun) ") -> str:
        self.type(text + "\n")
        return self.expect(then)

    def close(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            with_data, _, _ = select.select([self.fd], [], [], 0.2)
            if with_data:
                with contextlib.suppress(OSError):
                    os.read(self.fd, 4096)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the debugger did not exit")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[type[Terminal]]:
    opened: list[Terminal] = []

    def make(*args: str) -> Terminal:
        term = Terminal(*args, home=tmp_path)
        opened.append(term)
        return term

    yield make  # type: ignore[misc]
    for term in opened:
        try:
            os.kill(term.pid, signal.SIGKILL)
            os.waitpid(term.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_state_graph_debugged_at_the_terminal(terminal) -> None:
    term = terminal("debug", str(HERE / "programs" / "review.py"))
    assert "nodes draft, score, revise, publish" in term.expect("(midrun) ")
    term.type("break sco\t")  # readline completes the node's name
    term.expect("break score ")
    out = term.line("if round >= 1")
    assert "breakpoint 1: score if round >= 1 (at node score)" in out
    assert "breakpoint 2: log revise round {round} (at node revise)" in term.line(
        "log revise round {round}")
    assert "not set: No node 'nope'" in term.line("break nope")
    assert "1  score if round >= 1\r\n" in term.line("info breakpoints").replace("\n", "\r\n")
    out = term.line("continue")
    assert "log: round 0" in out and "stopped at node score, before (breakpoint 1)" in out
    assert "17" in term.line("print len(text)")
    assert 'text = "a red circle more"' in term.line("state")
    assert "stopped at node revise, before (step)" in term.line("next")
    assert "stopped at node revise, after (step)" in term.line("finish")
    assert "changed round: 1 -> 2" in term.line("diff")
    assert "error:" in term.line("print __import__('os')")
    term.line("delete 1")
    assert "run completed" in term.line("continue")
    term.type("quit\n")
    assert term.close() == 0


def test_readline_keeps_a_history_between_sessions(terminal, tmp_path: Path) -> None:
    term = terminal("debug", str(HERE / "programs" / "review.py"))
    term.expect("(midrun) ")
    term.line("break score")
    term.type("quit\n")
    assert term.close() == 0
    assert "break score" in (tmp_path / "history").read_text()
    again = terminal("debug", str(HERE / "programs" / "review.py"))
    again.expect("(midrun) ")
    again.type("\x1b[A\x1b[A")  # up twice (past "quit"): the last session's line
    again.expect("break score")
    again.type("\n")
    assert "breakpoint 1: score" in again.expect("(midrun) ")
    again.type("quit\n")
    assert again.close() == 0


def test_ctrl_c_pauses_a_running_graph(terminal) -> None:
    term = terminal("debug", str(HERE / "programs" / "ticks.py"))
    term.expect("(midrun) ")
    term.line("log tick n={n}")
    term.type("continue\n")
    term.expect("running (Ctrl-C pauses)")
    term.expect("log: n=3")  # it is well under way
    term.type("\x03")  # Ctrl-C while it runs
    out = term.expect(" (pause)")
    assert "pausing" in out and "stopped at node tick, " in out  # its next point
    term.expect("(midrun) ")
    n = int(term.line("print n").split("print n")[-1].split()[0])
    assert 3 <= n < 5000
    term.type("quit\n")
    assert term.close() == 0


def test_a_workflow_edited_at_a_sampler_step_and_undone(terminal, tmp_path: Path) -> None:
    term = terminal("debug", str(ROOT / "midrun" / "examples" / "demo_txt2img.json"),
                    "--device", "cpu", "--output-dir", str(tmp_path / "out"))
    term.expect("(midrun) ")
    assert "breakpoint 1: KSampler@2 (at node 3)" in term.line("break KSampler@2")
    out = term.line("continue", then="(midrun) ")
    assert "stopped at node 3 (KSampler) step 2/20 (breakpoint 1)" in out
    assert "5.0" in term.line("print cfg")
    out = term.line("set 3.cfg 2.5")
    assert "3.cfg = 2.5 from the next step" in out
    assert "stopped at node 3 (KSampler) step 3/20 (after the edit)" in out
    assert "2.5" in term.line("print cfg").split("print cfg")[-1]
    out = term.line("set 3.steps \"many\"")
    assert "error: Edit of 3.steps refused" in out
    out = term.line("undo")
    assert "3.cfg = 5.0 again" in out and "step 4/20 (after the edit)" in out
    assert "5.0" in term.line("print cfg").split("print cfg")[-1]
    assert "sampler =" in term.line("state")
    term.line("delete 1")
    assert "run completed" in term.line("continue")
    term.type("quit\n")
    assert term.close() == 0
    assert len(list((tmp_path / "out").rglob("*.png"))) == 1


def test_a_job_on_a_server_debugged_at_the_terminal(terminal, tmp_path: Path) -> None:
    import httpx

    from tests.server.conftest import make_config, start_server, txt2img

    live = start_server(make_config(tmp_path / "server"))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            assert http.post("/api/pipeline/pause").status_code == 200  # it waits for us
            job = http.post("/prompt", json={"prompt": txt2img(steps=12)}).json()["prompt_id"]
            term = terminal("debug", job, "--server", live.url)
            assert f"debugging job {job}" in term.expect("(midrun) ")
            assert "breakpoint 1: KSampler@3 (at node 3)" in term.line("break KSampler@3")
            assert "not set: A job's breakpoints name nodes" in term.line("catch")
            term.type("continue\n")
            term.expect("running (Ctrl-C pauses)")
            assert http.post("/api/pipeline/resume").status_code == 200
            out = term.expect("(midrun) ")
            assert "stopped at node 3 (KSampler) step 3/12 (breakpoint 1)" in out
            assert "7.0" in term.line("print cfg").split("print cfg")[-1]
            assert "3.cfg = 2.5 from the next step" in term.line("set 3.cfg 2.5")
            assert "2.5" in term.line("print cfg").split("print cfg")[-1]
            assert "the edit is withdrawn" in term.line("undo")
            assert "7.0" in term.line("print cfg").split("print cfg")[-1]
            assert "run completed" in term.line("continue")
            term.type("quit\n")
            assert term.close() == 0
        done = live.server.jobs.get(job)
        assert done.state.value == "completed"
        kinds = [e["kind"] for e in live.server.jobs.events(job)]
        assert kinds.count("edited") == 1 and kinds.count("edit_undone") == 1
        assert "edit_applied" not in kinds
    finally:
        live.stop()


def test_catch_stops_where_a_node_raises(terminal) -> None:
    term = terminal("debug", str(HERE / "programs" / "failing.py"))
    term.expect("(midrun) ")
    assert "breakpoint 1: catch ZeroDivisionError (at node errors)" in term.line(
        "catch ZeroDivisionError")
    out = term.line("continue")
    assert ("stopped at node divide, on_error (error: ZeroDivisionError: division by zero)"
            in out)  # fmt: skip
    assert "[1, 2, 0]" in term.line("print rows")
    assert "run failed: Node divide (divide) failed: ZeroDivisionError" in term.line("continue")
    term.type("quit\n")
    assert term.close() == 0
