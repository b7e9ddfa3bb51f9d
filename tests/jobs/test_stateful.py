"""Random concurrent control requests against running jobs (hypothesis, stateful):
each request gets exactly one answer, every job keeps exactly one state, terminal states
stay final, no job is lost, and the audit log records every accepted request."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from midrun.core.errors import MidrunError
from midrun.jobs.service import Jobs
from midrun.jobs.states import JobConflict, JobState
from midrun.jobs.worker import WorkerPool
from tests import testnodes
from tests.jobs.conftest import FAST, ticker

ACTIONS = ("pause", "resume", "abort", "edit", "undo")
# What each accepted request leaves in the audit log (one of these kinds, per request).
AUDIT = {
    "pause": ("pause_requested", "paused"),
    "resume": ("resumed",),
    "abort": ("aborted", "abort_requested"),
    "edit": ("edited",),
}


def make_machine(service: Jobs) -> type[RuleBasedStateMachine]:
    class ControlRace(RuleBasedStateMachine):
        jobs = Bundle("jobs")

        def __init__(self) -> None:
            super().__init__()
            self.pool = WorkerPool(service, ["cpu", "cpu"]).start()
            self.ids: list[str] = []
            self.terminal: dict[str, JobState] = {}
            self.accepted: Counter[tuple[str, str]] = Counter()
            self.undone: Counter[str] = Counter()

        @rule(target=jobs, steps=st.integers(3, 150))
        def submit(self, steps: int) -> str:
            job = service.submit(ticker(steps=steps, delay=0.005))
            self.ids.append(job.id)
            return job.id

        @rule(requests=st.lists(st.tuples(st.sampled_from(ACTIONS), jobs, st.integers(-3, 3)),
                                min_size=1, max_size=6))  # fmt: skip
        def burst(self, requests: list[tuple[str, str, int]]) -> None:
            """Fire the requests at once from separate threads."""
            outcomes: list[tuple[str, str, Any]] = []
            lock = threading.Lock()

            def fire(action: str, job_id: str, value: int) -> None:
                try:
                    if action == "pause":
                        answer: Any = service.pause(job_id)
                    elif action == "resume":
                        answer = service.resume(job_id)
                    elif action == "abort":
                        answer = service.abort(job_id, "random abort")
                    elif action == "edit":
                        answer = service.edit(job_id, "2", "gain", value)
                    else:
                        answer = service.undo(job_id)
                except JobConflict as exc:
                    answer = exc
                except MidrunError as exc:  # a refused edit: specific, typed
                    assert action == "edit", exc
                    answer = exc
                with lock:
                    outcomes.append((action, job_id, answer))

            threads = [threading.Thread(target=fire, args=r) for r in requests]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a control request hung"
            assert len(outcomes) == len(requests)  # exactly one answer each
            for action, job_id, answer in outcomes:
                if isinstance(answer, MidrunError):
                    if isinstance(answer, JobConflict):
                        assert answer.extra_info["state"] in {s.value for s in JobState}
                    continue
                if action == "undo":
                    self.undone[job_id] += len(answer)
                else:
                    self.accepted[(action, job_id)] += 1

        @invariant()
        def states_are_consistent(self) -> None:
            rows = {j.id: j for j in service.list() if j.id in set(self.ids)}
            assert set(rows) == set(self.ids), "a job was lost"
            for job_id, job in rows.items():
                assert isinstance(job.state, JobState)
                if job_id in self.terminal:
                    assert job.state == self.terminal[job_id], "a terminal state changed"
                elif job.state.terminal:
                    self.terminal[job_id] = job.state

        @invariant()
        def audit_log_is_complete(self) -> None:
            events = Counter((e["kind"], e["job_id"]) for e in service.events())
            for (action, job_id), count in self.accepted.items():
                logged = sum(events[(kind, job_id)] for kind in AUDIT[action])
                assert logged >= count, f"{action} on {job_id}: {count} accepted, {logged} logged"
            for job_id, count in self.undone.items():
                assert events[("edit_undone", job_id)] == count

        def teardown(self) -> None:
            print("ACCEPTED", dict(self.accepted), dict(self.undone))
            try:
                for job_id in self.ids:
                    deadline = time.monotonic() + 60
                    while not (final := service.get(job_id)).state.terminal:
                        with contextlib.suppress(JobConflict):  # racing the worker
                            service.abort(job_id, "teardown")
                        assert time.monotonic() < deadline, f"{job_id} stuck {final.state}"
                        time.sleep(0.01)
                    kinds = [e["kind"] for e in service.events(job_id)]
                    assert kinds[0] == "queued" and kinds[-1] == final.state.value
                    if final.state == JobState.COMPLETED:
                        steps = final.workflow["2"]["inputs"]["steps"]
                        assert len(final.outputs["4"]["value"][0]) == steps
            finally:
                self.pool.stop()

    return ControlRace


def test_concurrent_control_requests_keep_every_invariant(db, tmp_path) -> None:
    testnodes.reset()
    service = Jobs(db, testnodes.registry(), data_dir=tmp_path, settings=FAST)
    machine = make_machine(service)
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=10, stateful_step_count=20, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
