"""Faults a job meets outside its own nodes (SQLite and PostgreSQL): a checkpoint that
cannot be read, a worker that lets go of its job, a job that kills its worker's process
every time it runs. Each ends the job in one state, with a reason, and the workers go on."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from midrun.jobs import breakpoints
from midrun.jobs.execution import Execution
from midrun.jobs.service import Jobs
from midrun.jobs.settings import JobSettings
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool, recover
from midrun.store.schema import workers
from tests import testnodes
from tests.jobs.conftest import FAST, ticker

ROOT = Path(__file__).resolve().parents[2]


def tape(steps: int = 6) -> dict[str, Any]:
    return {
        "1": {"class_type": "Tape", "inputs": {"steps": steps}},
        "2": {"class_type": "Output", "inputs": {"value": ["1", 0], "label": "length"}},
        "3": {"class_type": "Output", "inputs": {"value": ["1", 1], "label": "last"}},
    }


def paused_at_step(service: Jobs, step: int = 3) -> tuple[str, Path]:
    """A tape job paused (by a breakpoint) at ``step``, and its checkpoint folder."""
    job = service.submit(tape())
    breakpoints.create(service, {"node_id": "1", "step": step}, job_id=job.id)
    with WorkerPool(service, ["cpu"]):
        stopped = service.wait(job.id, [JobState.PAUSED, JobState.FAILED])
    assert stopped.state == JobState.PAUSED and stopped.checkpoint_step == step
    folder = service.artifacts.path(f"jobs/{job.id}/checkpoint")  # type: ignore[attr-defined]
    assert (folder / "run.json").is_file() and list((folder / "blobs").iterdir())
    return job.id, folder


def _rewrite(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    header = json.loads((folder / "run.json").read_text())
    change(header)
    (folder / "run.json").write_text(json.dumps(header))


def _truncate_blob(folder: Path) -> None:
    blob = next((folder / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes()[:10])


def _replace_by_file(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_text("not a folder")


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "run.json is []": (lambda f: (f / "run.json").write_text("[]"), "a JSON list, not an object"),
    "run.json is not UTF-8": (lambda f: (f / "run.json").write_bytes(b"\xff\xfe{"), "corrupt"),
    "run.json has no plan": (lambda f: _rewrite(f, lambda h: h.pop("plan")), "malformed"),
    "run.json's plan is a number": (lambda f: _rewrite(f, lambda h: h.update(plan=7)), "malformed"),
    "a blob is truncated": (_truncate_blob, "has 10 bytes"),
    "the blobs folder is gone": (lambda f: shutil.rmtree(f / "blobs"), "is missing"),
    "the folder is a file": (_replace_by_file, "No run state"),
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_a_checkpoint_that_cannot_be_read_fails_its_job_with_the_reason(service, how) -> None:
    job_id, folder = paused_at_step(service)
    breaks, reason = BROKEN[how]
    breaks(folder)
    service.resume(job_id)
    with WorkerPool(service, ["cpu"]):
        ended = service.wait(job_id, timeout=20)
        after = service.wait(service.submit(tape(2)).id, timeout=20)  # the worker goes on
    assert ended.state == JobState.FAILED, (how, ended.state)
    assert ended.error["type"] == "invalid_run_state" and reason in ended.error["message"]
    assert ended.worker_id is None
    assert after.state == JobState.COMPLETED and after.outputs["2"]["value"] == [128]
    kinds = [e["kind"] for e in service.events(job_id)]
    assert kinds[-2:] == ["running", "failed"]


def test_a_broken_checkpoint_can_restart_its_job_from_the_beginning(db, tmp_path) -> None:
    testnodes.reset()
    settings = dataclasses.replace(FAST, broken_checkpoint="restart")
    service = Jobs(db, testnodes.registry(), data_dir=tmp_path, settings=settings)
    job_id, folder = paused_at_step(service)
    _truncate_blob(folder)
    for bp in breakpoints.list_breakpoints(service, job_id=job_id):
        breakpoints.remove(service, bp["id"])  # it would stop the new run at step 3 too
    service.resume(job_id)
    with WorkerPool(service, ["cpu"]):
        done = service.wait(job_id, timeout=20)
    assert done.state == JobState.COMPLETED
    assert (done.outputs["2"]["value"], done.outputs["3"]["value"]) == ([384], [6])
    restarted = [e for e in service.events(job_id) if e["kind"] == "recovered"]
    assert len(restarted) == 1 and "has 10 bytes" in restarted[0]["data"]["reason"]
    assert restarted[0]["data"]["kept_as"] == f"jobs/{job_id}/broken_checkpoint"
    assert service.artifacts.exists(f"jobs/{job_id}/broken_checkpoint/run.json")


def test_a_job_whose_end_cannot_be_recorded_is_taken_again_then_failed(
    service, monkeypatch
) -> None:
    """The worker's last transaction fails every time: the job is let go of, recovery
    runs it again, and after max_crashes it fails instead of staying running."""
    calls = []

    def refuse(self, end):
        calls.append(self.job.id)
        raise ConnectionError("the database went away")

    monkeypatch.setattr(Execution, "_finish", refuse)
    job = service.submit(ticker(steps=2, delay=0))
    with WorkerPool(service, ["cpu"]):
        ended = service.wait(job.id, timeout=30)
    assert ended.state == JobState.FAILED and ended.error["type"] == "worker_crashed"
    assert len(calls) == service.settings.max_crashes == ended.crashes
    recovered = [e["data"]["to"] for e in service.events(job.id) if e["kind"] == "recovered"]
    assert recovered == ["queued", "queued", "failed"]


def test_a_job_a_live_worker_let_go_of_is_recovered_and_abort_ends_it(service) -> None:
    job = service.submit(ticker(steps=200, delay=0.01))
    with WorkerPool(service, ["cpu"]) as pool:
        worker = pool.workers[0]
        deadline = time.monotonic() + 10
        while service.get(job.id).state != JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        service.pause(job.id)
        assert service.wait(job.id, [JobState.PAUSED]).state == JobState.PAUSED
        # A row left as a worker that lost track of its job would leave it: running, on a
        # live worker that runs nothing.
        with service.db.begin() as conn:
            stuck = service.store.lock(conn, job.id)
            service.store.transition(conn, stuck, JobState.QUEUED)
            stuck = service.store.lock(conn, job.id)
            service.store.transition(conn, stuck, JobState.RUNNING, worker_id=worker.id)
            conn.execute(update(workers).where(workers.c.id == worker.id).values(job_id=None))
        service.abort(job.id, "stop it")
        ended = service.wait(job.id, timeout=10)
    assert ended.state == JobState.ABORTED
    assert [e["data"]["to"] for e in service.events(job.id)
            if e["kind"] == "recovered"] == ["aborted"]  # fmt: skip


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from midrun.jobs.service import Jobs
    from midrun.jobs.settings import JobSettings
    from midrun.jobs.worker import WorkerPool
    from midrun.store.database import Database
    from tests import testnodes
    service = Jobs(Database({url!r}), testnodes.registry(), data_dir={data!r},
                   settings=JobSettings(poll_interval=0.01, worker_timeout=2.0))
    WorkerPool(service).start()
    time.sleep(30)
    """
)


def test_a_job_that_kills_its_worker_fails_after_max_crashes(db, tmp_path) -> None:
    settings = JobSettings(poll_interval=0.01, heartbeat_seconds=0.2, worker_timeout=2.0,
                           max_crashes=3)  # fmt: skip
    service = Jobs(db, testnodes.registry(), data_dir=tmp_path, settings=settings)
    job = service.submit(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Crash", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    url = db.url.render_as_string(hide_password=False)
    script = CHILD.format(root=str(ROOT), url=url, data=str(tmp_path))
    codes = []
    for _ in range(settings.max_crashes):
        child = subprocess.run([sys.executable, "-c", script], timeout=40, check=False)
        codes.append(child.returncode)
        recover(service)  # as the next heartbeat anywhere would
    assert codes == [70] * settings.max_crashes  # each run of the job killed its process
    ended = service.get(job.id)
    assert ended.state == JobState.FAILED and ended.crashes == settings.max_crashes
    assert ended.error["type"] == "worker_crashed" and "died 3 times" in ended.error["message"]


def test_a_checkpoint_read_while_it_is_saved_again_is_never_half_read(service) -> None:
    """An edit on a pausing job reads its checkpoint while the worker may be saving it
    (two renames): the read finds the old one or the new one, never half of either."""
    job_id, _folder = paused_at_step(service)
    states = [service.artifacts.load_run_state(job_id)]
    assert states[0] is not None
    problems: list[BaseException] = []
    saving = threading.Event()

    def save() -> None:
        saving.set()
        for _ in range(150):
            service.artifacts.save_run_state(job_id, states[0])

    saver = threading.Thread(target=save)
    saver.start()
    saving.wait(5)
    reads = 0
    while saver.is_alive() or reads < 20:
        try:
            loaded = service.artifacts.load_run_state(job_id)
            assert loaded is not None and loaded.blobs == states[0].blobs
        except BaseException as exc:
            problems.append(exc)
        reads += 1
    saver.join()
    assert problems == [], f"{len(problems)} of {reads} reads failed: {problems[:3]}"
