"""The ``midrun`` client commands against a live server: over HTTP (``--server``), and
embedded on the server's own data directory (no server named); ``midrun run --server``
following a job over the WebSocket, and its Ctrl-C prompt in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from midrun.cli.main import main
from midrun.jobs.states import JobState
from tests.server.conftest import LiveServer, make_config, start_server, txt2img, wait_for

ROOT = Path(__file__).resolve().parent.parent
LONG = 3000  # sampler steps: a job that runs until it is told otherwise


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_config(tmp_path_factory.mktemp("cli-server")))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MIDRUN_SERVER", "MIDRUN_TOKEN", "MIDRUN_DATA_DIR", "MIDRUN_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def submit(live: LiveServer, **kwargs: Any) -> str:
    reply = httpx.post(f"{live.url}/prompt", json={"prompt": txt2img(**kwargs)}, timeout=30)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["prompt_id"])


def state(live: LiveServer, job_id: str) -> JobState:
    return live.server.jobs.get(job_id).state


def stepping(live: LiveServer, job_id: str, at_least: int = 1) -> None:
    """Wait until the job's sampler has made ``at_least`` steps."""

    def stepped() -> bool:
        signal_ = live.server.jobs.signals.get(job_id)
        return signal_ is not None and (signal_.step or 0) >= at_least

    wait_for(stepped, timeout=60)


@pytest.fixture
def long_job(live: LiveServer) -> Iterator[str]:
    """A long job, running; aborted afterwards so the worker is free for the next test."""
    job_id = submit(live, steps=LONG, seed=5)
    stepping(live, job_id, 2)
    yield job_id
    if not state(live, job_id).terminal:
        live.server.jobs.abort(job_id, "test over")
    live.server.jobs.wait(job_id, timeout=60)


def test_jobs_list_and_show(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit(live, steps=2, seed=3)
    live.server.jobs.wait(job_id, timeout=60)
    code, out, _ = cli(capsys, "jobs", "list", "--server", live.url)
    assert code == 0
    assert any(line.startswith(job_id) and "completed" in line for line in out.splitlines())
    code, out, _ = cli(capsys, "jobs", "show", job_id, "--server", live.url)
    assert code == 0 and json.loads(out)["state"] == "completed"


def test_pause_resume_and_abort_with_reason(
    live: LiveServer, long_job: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "pause", long_job, "--wait", "--server", live.url)
    assert code == 0 and out.strip() == f"job {long_job}: paused"
    code, out, _ = cli(capsys, "resume", long_job, "--front", "--server", live.url)
    assert code == 0 and out.strip() == f"job {long_job}: queued"
    stepping(live, long_job, (live.server.jobs.get(long_job).checkpoint_step or 0) + 1)
    code, out, _ = cli(capsys, "abort", long_job, "--reason", "wrong colour", "--wait",
                       "--server", live.url)  # fmt: skip
    assert code == 0 and out.strip() == f"job {long_job}: aborted"
    assert live.server.jobs.debug_state(long_job)["abort_reason"] == "wrong colour"


def test_edit_undo_breakpoints_and_preview(
    live: LiveServer, long_job: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", live.url)
    assert cli(capsys, "pause", long_job, "--wait", *server)[0] == 0
    code, out, _ = cli(capsys, "edit", long_job, "3.cfg=5.5", "6.text=a blue star", *server)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].endswith("3.cfg 7 -> 5.5 (pending)")  # 7.0 comes back from JSON as 7
    assert lines[1].endswith('6.text "a red star on a white background" -> "a blue star" '
                             "(pending)")  # fmt: skip
    cfg_edit = int(lines[0].split()[1].rstrip(":"))
    code, out, _ = cli(capsys, "undo", long_job, str(cfg_edit), *server)
    assert code == 0 and out.strip() == f"undone edit {cfg_edit}: 3.cfg back to 7"
    pending = live.server.jobs.store.edits(long_job, status="pending")
    assert [(e["node_id"], e["new"]) for e in pending] == [("6", "a blue star")]
    assert cli(capsys, "undo", long_job, *server)[0] == 0
    assert live.server.jobs.store.edits(long_job, status="pending") == []

    code, out, _ = cli(capsys, "breakpoints", "add", "--job", long_job, "3", "--step", "9999",
                       *server)  # fmt: skip
    assert code == 0 and out.startswith("added: ")
    bp_id = out.split()[1]
    assert cli(capsys, "breakpoints", "disable", bp_id, *server)[0] == 0
    code, out, _ = cli(capsys, "breakpoints", "list", "--job", long_job, *server)
    assert out.strip().endswith("node 3 step 9999 (disabled)")
    assert cli(capsys, "breakpoints", "remove", bp_id, *server)[0] == 0
    assert cli(capsys, "breakpoints", "list", "--job", long_job, *server)[1] == ""

    # The latest preview, converted to the file's format; then one step's, as it is.
    latest = tmp_path / "latest.png"
    code, out, _ = cli(capsys, "preview", long_job, "-o", str(latest), *server)
    assert code == 0 and out.strip().endswith(f"saved to {latest}")
    step = out.split()[3]
    with Image.open(latest) as saved:
        assert saved.format == "PNG" and min(saved.size) > 0
    one = tmp_path / "one.jpg"
    code, out, _ = cli(capsys, "preview", long_job, "-o", str(one), "--step", step, *server)
    assert code == 0 and out.strip() == f"preview of step {step} saved to {one}"
    with Image.open(one) as saved:
        assert saved.format == "JPEG"
    code, _, err = cli(capsys, "preview", long_job, "-o", str(one), "--step", "9999", *server)
    assert code == 1 and err.startswith(f"error: Job {long_job} has no preview at step 9999")


def test_pipeline_pause_status_resume(
    live: LiveServer, long_job: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "pipeline", "pause", "--server", live.url)
    assert code == 0 and out.startswith(f"pipeline paused; paused jobs: {long_job};")
    assert state(live, long_job) == JobState.PAUSED
    code, out, _ = cli(capsys, "pipeline", "status", "--server", live.url, "--json")
    assert json.loads(out)["state"] == "paused"
    code, out, err = cli(capsys, "pipeline", "pause", "--server", live.url)
    assert code == 1 and err.strip() == "error: The pipeline is already paused"
    code, out, _ = cli(capsys, "pipeline", "resume", "--server", live.url)
    assert code == 0 and out.startswith("pipeline running")
    wait_for(lambda: state(live, long_job) == JobState.RUNNING)


def test_batch_increments_seeds(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow = tmp_path / "txt2img.json"
    workflow.write_text(json.dumps(txt2img(steps=1, seed=100)))
    code, out, _ = cli(capsys, "batch", str(workflow), "--count", "3", "--seed", "increment",
                       "--server", live.url, "--json")  # fmt: skip
    assert code == 0
    batch = json.loads(out)
    assert [j["parameters_used"] for j in batch["jobs"]] == [
        {"3.seed": 100}, {"3.seed": 101}, {"3.seed": 102}]  # fmt: skip
    seeds = [live.server.jobs.get(j["id"]).workflow["3"]["inputs"]["seed"]
             for j in batch["jobs"]]  # fmt: skip
    assert seeds == [100, 101, 102]
    for job in batch["jobs"]:
        live.server.jobs.wait(job["id"], timeout=60)


def test_server_errors_exit_one_with_the_message(
    live: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "pause", "no-such-job", "--server", live.url)
    assert code == 1 and err.strip() == "error: No job 'no-such-job'"
    done = submit(live, steps=1, seed=4)
    live.server.jobs.wait(done, timeout=60)
    code, _, err = cli(capsys, "resume", done, "--server", live.url)
    assert code == 1
    assert err.strip() == f"error: Cannot resume job {done}: it has completed"
    code, _, err = cli(capsys, "edit", done, "cfg=1", "--server", live.url)
    assert code == 1 and "node.field=value" in err
    code, _, err = cli(capsys, "jobs", "--server", "http://127.0.0.1:9")
    assert code == 1 and err.startswith("error: cannot reach the server")


def test_embedded_commands_share_the_servers_database(
    live: LiveServer, long_job: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ("--data-dir", str(live.server.config.data_dir))
    code, out, _ = cli(capsys, "jobs", *data)
    assert code == 0 and any(line.startswith(long_job) for line in out.splitlines())
    # The server's worker notices the pause at its next poll of the job's row.
    code, out, _ = cli(capsys, "pause", long_job, "--wait", "--timeout", "30", *data)
    assert code == 0 and out.strip() == f"job {long_job}: paused"
    assert state(live, long_job) == JobState.PAUSED
    code, _, err = cli(capsys, "pause", long_job, *data)
    assert code == 1 and err.strip() == f"error: Cannot pause job {long_job}: it is already paused"


def test_users_token_opens_an_auth_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, auth=True, workers=False)
    code, token, _ = cli(capsys, "users", "add", "ada", "--role", "admin", "--data-dir",
                         str(config.data_dir))  # fmt: skip
    assert code == 0 and token.strip().startswith("mr_")
    assert cli(capsys, "users", "list", "--data-dir", str(config.data_dir))[1] == "ada\tadmin\n"
    live = start_server(config)
    try:
        code, _, err = cli(capsys, "jobs", "--server", live.url)
        assert code == 1 and "requires a bearer token" in err
        assert httpx.get(f"{live.url}/api/jobs", timeout=10).status_code == 401
        code, out, _ = cli(capsys, "pipeline", "status", "--server", live.url,
                           "--token", token.strip())  # fmt: skip
        assert code == 0 and out.startswith("pipeline running")
    finally:
        live.stop()


def test_run_on_a_server_follows_the_job(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow = tmp_path / "txt2img.json"
    workflow.write_text(json.dumps(txt2img(steps=3, seed=8)))
    code, out, err = cli(capsys, "run", str(workflow), "--set", "3.steps=4", "--server", live.url)
    assert code == 0, err
    assert "[3 KSampler] step 4/4" in err and "preview saved (step" in err
    report = json.loads(out)
    assert report["status"] == "completed"
    assert report["outputs"]["9"]["images"][0]["filename"].startswith("midrun")


def test_ctrl_c_asks_and_pauses_the_job(live: LiveServer, tmp_path: Path) -> None:
    workflow = tmp_path / "long.json"
    workflow.write_text(json.dumps(txt2img(steps=LONG, seed=9)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "midrun.cli.main", "run", str(workflow), "--server", live.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        job_id = wait_for(lambda: next((j.id for j in live.server.jobs.list()
                                        if j.workflow["3"]["inputs"]["seed"] == 9), None),
                          timeout=60)  # fmt: skip
        stepping(live, job_id, 2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate("p\n", timeout=60)
        assert proc.returncode == 0, err
        assert f"job {job_id} queued" in err and "[3 KSampler] step " in err
        assert "[p]ause, [a]bort or [c]ontinue?" in err
        assert f"job {job_id} paused at step" in err
        assert state(live, job_id) == JobState.PAUSED
    finally:
        if proc.poll() is None:
            proc.kill()
        for job in live.server.jobs.list(states=[JobState.PAUSED, JobState.RUNNING]):
            live.server.jobs.abort(job.id, "test over")


def test_local_run_takes_set_like_an_edited_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    life = ROOT / "midrun" / "examples" / "life.json"
    edited = json.loads(life.read_text())
    edited["2"]["inputs"]["generations"] = 3
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    code, out, _ = cli(capsys, "run", str(tmp_path / "edited.json"), "--quiet",
                       "--output-dir", str(tmp_path / "a"))  # fmt: skip
    assert code == 0
    expected = json.loads(out)["outputs"]["4"]["text"]
    code, out, _ = cli(capsys, "run", str(life), "--set", "2.generations=3", "--quiet",
                       "--output-dir", str(tmp_path / "b"))  # fmt: skip
    assert code == 0 and json.loads(out)["outputs"]["4"]["text"] == expected
    code, _, err = cli(capsys, "run", str(life), "--set", "9.seed=1", "--quiet")
    assert code == 1 and err.startswith("error: --set 9.seed=1: the workflow has no node '9'")
