"""Batches, and crash recovery after a real ``kill -9``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from midrun.jobs.batches import get_batch, parse_variation, stop_batch, submit_batch
from midrun.jobs.service import Jobs
from midrun.jobs.settings import JobSettings
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool
from tests import testnodes
from tests.jobs.conftest import result, ticker

ROOT = Path(__file__).resolve().parents[2]


def test_a_batch_varies_its_jobs_and_counts_them(service, pool) -> None:
    batch = submit_batch(service, ticker(steps=3, delay=0), variations=[
        {"type": "seed", "node_id": "1", "field": "value", "mode": "increment", "start": 10},
        {"type": "cycle", "node_id": "3", "field": "label", "values": ["a", "b"]},
        {"type": "sweep", "node_id": "2", "field": "gain", "start": 1, "stop": 4, "step": 1},
    ])  # fmt: skip
    assert batch["total_count"] == 4 and batch["status"] == "running"
    params = [j["parameters_used"] for j in batch["jobs"]]
    assert [p["1.value"] for p in params] == [10, 11, 12, 13]
    assert [p["3.label"] for p in params] == ["a", "b", "a", "b"]
    for member in batch["jobs"]:
        service.wait(member["id"])
    done = get_batch(service, batch["id"])
    assert done["status"] == "completed" and done["completed_count"] == 4
    totals = [service.get(m["id"]).outputs["3"]["value"][0] for m in done["jobs"]]
    assert totals == [10 + i + g * 6 for i, g in enumerate((1, 2, 3, 4))]  # start + gain * 6


def test_stop_remaining_aborts_the_queued_jobs_only(service, pool) -> None:
    batch = submit_batch(service, ticker(steps=200, delay=0.01), count=4, variations=[
        {"type": "cycle", "node_id": "2", "field": "gain", "values": [1, 2]}])  # fmt: skip
    first = batch["jobs"][0]["id"]
    service.wait(first, [JobState.RUNNING])
    stopped = stop_batch(service, batch["id"])
    assert stopped["status"] == "stopped"
    assert stopped["states"] == {"running": 1, "aborted": 3}
    stop_batch(service, batch["id"], include_running=True)
    assert service.wait(first).state == JobState.ABORTED
    assert get_batch(service, batch["id"])["failed_count"] == 4


def test_bad_variations_are_named(service) -> None:
    from midrun.core.errors import ParameterError

    with pytest.raises(ParameterError, match="Unknown variation"):
        parse_variation({"type": "zigzag"})
    with pytest.raises(ParameterError, match="lacks 'values'"):
        parse_variation({"type": "cycle", "node_id": "1", "field": "value"})


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from midrun.jobs.service import Jobs
    from midrun.jobs.settings import JobSettings
    from midrun.jobs.worker import WorkerPool
    from midrun.store.database import Database
    from tests import testnodes
    db = Database({url!r})
    service = Jobs(db, testnodes.registry(), data_dir={data!r},
                   settings=JobSettings(checkpoint_every_steps=1, poll_interval=0.01))
    WorkerPool(service).start()
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_process_loses_no_job_and_the_output_is_identical(db, tmp_path) -> None:
    settings = JobSettings(poll_interval=0.01, heartbeat_seconds=0.2, worker_timeout=2.0)
    service = Jobs(db, testnodes.registry(), data_dir=tmp_path, settings=settings)
    with WorkerPool(service):
        straight = service.wait(service.submit(ticker(steps=40, delay=0.02, gain=3)).id)
    job = service.submit(ticker(steps=40, delay=0.02, gain=3))
    url = db.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(ROOT), url=url, data=str(tmp_path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while (service.get(job.id).checkpoint_step or 0) < 10:
            assert time.monotonic() < deadline, "the child never checkpointed"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    killed = service.get(job.id)
    assert killed.state == JobState.RUNNING  # as the dead process left it
    with WorkerPool(service):  # recovery on start: the dead worker's pid is gone
        done = service.wait(job.id, timeout=30)
    assert done.state == JobState.COMPLETED
    assert result(done) == result(straight)
    recovered = [e for e in service.events(job.id) if e["kind"] == "recovered"]
    assert recovered and recovered[0]["data"]["from_checkpoint"] is True
    continued = [e for e in service.events(job.id)
                 if e["kind"] == "running" and e["data"]["continued"]]
    assert continued[-1]["step"] >= 10  # resumed from its checkpoint, not from step 0


def test_saved_workflows_run_with_parameters_that_become_the_defaults(service, pool) -> None:
    from midrun.core.errors import ParameterError
    from midrun.jobs.workflows import (
        WorkflowNotFound,
        execute_workflow,
        get_workflow,
        save_workflow,
        workflow_parameters,
    )

    saved = save_workflow(service, "ticker", ticker(steps=3, delay=0))
    job = execute_workflow(service, saved["id"], {"2.gain": 4})
    assert job.parameters_used == {"2.gain": 4} and job.workflow_id == saved["id"]
    assert result(service.wait(job.id)) == (24, [4, 4, 4])
    listed = workflow_parameters(service, saved["id"])
    params = {f"{p['node_id']}.{p['field']}": p for p in listed}
    assert params["2.gain"]["value"] == 4 and params["2.gain"]["default"] == 1
    second = execute_workflow(service, saved["id"], {"1.value": 2})
    assert second.parameters_used == {"2.gain": 4, "1.value": 2}
    assert get_workflow(service, saved["id"])["default_parameters"] == second.parameters_used
    with pytest.raises(ParameterError):
        execute_workflow(service, saved["id"], {"2.gain": 999})
    with pytest.raises(WorkflowNotFound):
        execute_workflow(service, "missing")
    service.wait(second.id)


def test_a_starved_heartbeat_does_not_requeue_this_process_own_job(service, pool) -> None:
    # Recovery trusts what it can see directly: a worker of this very process is alive
    # even when its heartbeat is old (a starved heartbeat thread), so its job is not run
    # twice. Workers of other processes still need a recent heartbeat (test above).
    from datetime import timedelta

    from midrun.jobs.worker import recover
    from midrun.store.schema import now, workers

    job = service.submit(ticker(steps=200, delay=0.01))
    deadline = time.monotonic() + 20
    while service.get(job.id).state != JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    with service.db.begin() as conn:
        conn.execute(workers.update().values(heartbeat_at=now() - timedelta(hours=1)))
    assert recover(service) == []
    assert service.get(job.id).state == JobState.RUNNING
    service.abort(job.id, "done")
    service.wait(job.id)
