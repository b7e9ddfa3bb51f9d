"""``midrun dap`` driven by a DAP client nobody here wrote: npm's
``@vscode/debugadapter-testsupport`` (its ``DebugClient`` is what VS Code's own adapters
are tested with), installed by the suite into an ignored folder of the virtual
environment. ``client.js`` runs each scenario and reports what it saw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROGRAM = HERE / "programs" / "review.py"
WORKFLOW = ROOT / "midrun" / "examples" / "demo_txt2img.json"
ADAPTER = ROOT / "editors" / "vscode" / "adapter.py"  # what the VS Code extension spawns
CLIENT_VERSION = "1.68.0"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the DAP client tests")
        pytest.skip("node/npm are not installed")
    folder = Path(sys.prefix) / "dap-client"
    package = folder / "node_modules" / "@vscode" / "debugadapter-testsupport"
    if not (package / "package.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund",
                               "--prefix", str(folder),
                               f"@vscode/debugadapter-testsupport@{CLIENT_VERSION}"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        if done.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"npm install failed: {done.stderr[-2000:]}")
            pytest.skip(f"npm install failed (offline?): {done.stderr[-500:]}")
    return folder / "node_modules"


def run(node_modules: Path, scenario: str, timeout: float = 240, **config: Any) -> dict[str, Any]:
    settings = {"python": sys.executable, "adapter": str(ADAPTER), "cwd": str(ROOT),
                "program": str(PROGRAM), **config}  # fmt: skip
    env = {**os.environ, "NODE_PATH": str(node_modules), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["node", str(HERE / "client.js"), scenario, json.dumps(settings)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from the client:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert report["ok"], f"{report.get('error')}\n{done.stdout[-3000:]}"
    return report


def line_of(text: str) -> int:
    return PROGRAM.read_text().splitlines().index(text) + 1


def test_a_state_graph_is_stepped_from_its_entry_to_its_end(node_modules: Path) -> None:
    report = run(node_modules, "stepping")
    assert report["stops"] == [
        {"reason": "entry", "name": "node draft, before"},
        {"reason": "step", "name": "node draft, after"},  # stepIn: the next point of any kind
        {"reason": "step", "name": "node score, before"},  # next: the next node
        {"reason": "step", "name": "node score, after"},  # stepOut: out of the node
        {"reason": "step", "name": "node revise, before"},
        {"reason": "step", "name": "node score, before"},
        {"reason": "step", "name": "node revise, before"},
        {"reason": "step", "name": "node score, before"},
        {"reason": "step", "name": "node publish, before"},
    ]
    assert report["outputs"] == ["run completed"]


def test_every_breakpoint_kind_logpoints_and_node_errors(node_modules: Path) -> None:
    report = run(node_modules, "breakpoints", inputs={"topic": "a red circle", "fail": True},
                 revise_line=line_of("def revise(state):") + 1)
    functions = report["answers"]["functions"]
    stops = [{**stop, "text": stop.get("text")} for stop in report["stops"]]
    assert stops == [
        # score: a hit count (>= 2), revise: a condition (round >= 1), then node errors
        {"reason": "function breakpoint", "name": "node score, before",
         "hits": [functions[0]["id"]], "text": None},
        {"reason": "function breakpoint", "name": "node revise, before",
         "hits": [functions[1]["id"]], "text": None},
        {"reason": "function breakpoint", "name": "node score, before",
         "hits": [functions[0]["id"]], "text": None},
        {"reason": "exception", "name": "node publish, on_error", "hits": [],
         "text": "ValueError: cannot publish 'a red circle more more'"},
    ]  # fmt: skip
    assert report["outputs"] == ["revising round 0", "revising round 1",
                                 "run failed: Node publish (publish) failed: ValueError: "
                                 "cannot publish 'a red circle more more'"]  # fmt: skip
    assert report["exitCode"] == 1
    lines = report["answers"]["lines"]
    assert lines[0]["message"] == "stops at node revise"
    assert "inside no node function" in lines[1]["message"]


def png(folder: Path) -> bytes:
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 1, files
    return files[0].read_bytes()


def test_a_workflow_held_at_a_sampler_step_shows_tensors_and_takes_an_edit(
    node_modules: Path, tmp_path: Path
) -> None:
    plain = run(node_modules, "workflow", program=str(WORKFLOW),
                output_dir=str(tmp_path / "plain"))  # fmt: skip
    edited = run(node_modules, "workflow", program=str(WORKFLOW),
                 output_dir=str(tmp_path / "edited"), edit="2.5")  # fmt: skip
    frame = plain["frame"]
    assert frame["name"] == "node 3 (KSampler) step 2/20"
    assert frame["source"]["path"] == str(WORKFLOW) and frame["line"] == 6
    assert plain["inputs"] == {"cfg": "5.0", "seed": "7"}
    assert plain["tensor"].startswith("tensor torch.float32 [1, 4, 8, 8] on cpu min=")
    assert plain["inputTensor"] == ("tensor torch.float32 [1, 4, 8, 8] on cpu min=0 max=0 "
                                    "mean=0")  # the empty latent the sampler was given
    assert plain["tensorParts"][:4] == ["type", "shape", "dtype", "device"]
    assert plain["evaluated"] == {"cfg * 2": "10.0", "step": "2", "inputs.steps - step": "18",
                                  "len(positive)": "1"}  # fmt: skip
    assert "not allowed" in plain["refused"]
    edit = edited["edit"]
    assert (edit["value"], edit["reason"], edit["cfg"]) == ("2.5", "step", "2.5")
    assert edit["where"] == "node 3 (KSampler) step 3/20"  # applied from the next step
    assert "steps" in edit["refused"]
    assert png(tmp_path / "plain") != png(tmp_path / "edited")


def test_pause_terminate_and_a_breakpoint_the_evaluator_disabled(node_modules: Path) -> None:
    report = run(node_modules, "control", program=str(HERE / "programs" / "ticks.py"))
    changed = report["changed"]
    assert changed["reason"] == "changed" and changed["breakpoint"]["verified"] is False
    assert "'**' would make an integer" in changed["breakpoint"]["message"]
    assert report["reason"] == "pause" and report["n"] >= 2
    assert report["exitCode"] == 1
    assert report["outputs"][-1] == "run aborted: stopped by the debugger"


def test_bad_requests_get_error_responses_that_name_the_fix(node_modules: Path) -> None:
    messages = run(node_modules, "errors")["messages"]
    assert set(messages) == {"launchWithout", "launchMissing", "breakpointsFirst", "unknown",
                             "noSource", "badRef", "stateEdit", "afterEnd"}  # fmt: skip


def test_a_job_on_a_running_server_is_attached_stopped_at_a_step_and_edited(
    node_modules: Path, tmp_path: Path
) -> None:
    from tests.server.conftest import make_config, start_server, txt2img

    live = start_server(make_config(tmp_path))
    try:
        prompt = txt2img(steps=12)
        report = run(node_modules, "attach", server=live.url, prompt=prompt, edit="2.0")
        jobs = live.server.jobs
        edited = jobs.wait(report["job"], timeout=120)
        plain = jobs.wait(jobs.submit(prompt).id, timeout=120)
        assert report["stop"] == {"reason": "function breakpoint",
                                  "name": "node 3 (KSampler) step 3/12",
                                  "hits": [report["breakpoints"][0]["id"]]}  # fmt: skip
        assert (report["cfg"], report["before"], report["set"]) == ("7.0", "14.0", "2.0")
        assert "steps" in report["refused"] and report["end"] == "terminated"
        assert edited.state.value == plain.state.value == "completed"
        applied = [e for e in jobs.events(edited.id) if e["kind"] == "edit_applied"]
        assert [(e["node_id"], e["step"]) for e in applied] == [("3", 3)]

        def image(job: Any) -> bytes:
            found = job.outputs["9"]["images"][0]
            return (live.server.config.output_dir / found["subfolder"]
                    / found["filename"]).read_bytes()  # fmt: skip

        assert image(edited) != image(plain)
    finally:
        live.stop()


def test_the_adapter_serves_over_tcp_on_loopback(node_modules: Path) -> None:
    server = subprocess.Popen([sys.executable, "-m", "midrun.cli.main", "dap", "--port", "0",
                               "--once"], stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        assert line.startswith("midrun dap listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        report = run(node_modules, "tcp", port=port)
        assert (report["first"], report["end"]) == ("entry", "terminated")
        assert server.wait(30) == 0  # --once: gone after its session
    finally:
        if server.poll() is None:
            server.kill()
