"""Random concurrent control requests against running jobs (hypothesis, stateful):
each request gets exactly one answer, no job is lost, terminal states stay final, each
job's state is the one its audit log leads to (replayed through the state table), and the
log holds exactly what the accepted requests wrote, as their answers say."""

from __future__ import annotations

import threading
from collections import Counter
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from midrun.core.errors import MidrunError
from midrun.jobs.service import Jobs
from midrun.jobs.states import JobConflict, JobState
from midrun.jobs.worker import WorkerPool
from midrun.store.schema import job_events, jobs
from tests import testnodes
from tests.jobs.conftest import FAST, ticker

ACTIONS = ("pause", "resume", "abort", "edit", "undo")

Q, R, PG, P = JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED
# How each audit-log kind moves a job (from -> to), after the state table in
# midrun/jobs/states.py. A kind missing here, or a move missing from its map, is a log
# the model cannot explain: the invariant fails on it.
MOVES: dict[str, dict[JobState | None, JobState]] = {
    "queued": {None: Q},
    "running": {Q: R},
    "pausing": {R: PG},
    "paused": {Q: P, PG: P},  # from queued: held in place by the request itself
    "resumed": {P: Q},
    "aborting": {R: R, PG: PG},  # ends at the worker's next point
    "aborted": dict.fromkeys((Q, P, R, PG), JobState.ABORTED),
    "completed": {R: JobState.COMPLETED, PG: JobState.COMPLETED},
    "edited": {Q: Q, R: R, PG: PG, P: P},
    "edit_undone": {Q: Q, R: R, PG: PG, P: P},
    "edit_applied": {R: R, PG: PG},
    "edit_refused": {R: R, PG: PG},
}


def replay(job_id: str, kinds: list[str]) -> tuple[JobState, bool, Counter[str]]:
    """The state a job's audit log leads to, whether an abort is pending, and the log's
    counts (with "paused" / "aborted" split into the ones the request itself wrote, from
    queued or paused, and the ones the worker wrote)."""
    state: JobState | None = None
    abort_pending = False
    counts: Counter[str] = Counter()
    for kind in kinds:
        moves = MOVES.get(kind)
        assert moves is not None, f"{job_id}: unexpected {kind!r} in {kinds}"
        assert state in moves, f"{job_id}: {kind!r} in state {state} ({kinds})"
        if kind in ("paused", "aborted"):
            by_request = state in (Q, P)
            counts[f"{kind} by request" if by_request else f"{kind} by worker"] += 1
            assert by_request or kind == "paused" or abort_pending, (
                f"{job_id}: the worker aborted without a request ({kinds})"
            )
            assert not (kind == "paused" and abort_pending), (
                f"{job_id}: paused with an abort pending ({kinds})"
            )
        else:
            counts[kind] += 1
        state = moves[state]
        abort_pending = (abort_pending or kind == "aborting") and not state.terminal
    assert state is not None, f"{job_id} has no audit log"
    return state, abort_pending, counts


def snapshot(service: Jobs, ids: list[str]) -> dict[str, tuple[JobState, str | None, list[str]]]:
    """Each job's state, request and audit log (kinds in order), read in one statement:
    one consistent snapshot on SQLite and on PostgreSQL alike."""
    query = (
        select(jobs.c.id, jobs.c.state, jobs.c.request, job_events.c.kind)
        .select_from(jobs.outerjoin(job_events, job_events.c.job_id == jobs.c.id))
        .where(jobs.c.id.in_(ids))
        .order_by(jobs.c.id, job_events.c.id)
    )
    rows: dict[str, tuple[JobState, str | None, list[str]]] = {}
    with service.db.read() as conn:
        for job_id, state, request, kind in conn.execute(query):
            entry = rows.setdefault(job_id, (JobState(state), request, []))
            if kind is not None:
                entry[2].append(kind)
    return rows


class Direct:
    """Control requests as Python calls on the service, on ticker jobs."""

    def __init__(self, service: Jobs) -> None:
        self.service = service

    def submit(self, steps: int) -> str:
        return self.service.submit(ticker(steps=steps, delay=0.005)).id

    def fire(self, action: str, job_id: str, value: int) -> Any:
        """The answer: the job (``state``, ``request``), the undone edits, or the error."""
        service = self.service
        try:
            if action == "pause":
                return service.pause(job_id)
            if action == "resume":
                return service.resume(job_id)
            if action == "abort":
                return service.abort(job_id, "random abort")
            if action == "edit":
                return service.edit(job_id, "2", "gain", value)
            return service.undo(job_id)
        except JobConflict as exc:
            return exc
        except MidrunError as exc:  # a refused edit: specific, typed
            assert action == "edit", exc
            return exc

    def check_completed(self, job: Any) -> None:
        steps = job.workflow["2"]["inputs"]["steps"]
        assert len(job.outputs["4"]["value"][0]) == steps


class OverHTTP:
    """The same requests through midrun's HTTP API (``POST /prompt`` and
    ``/api/jobs/{id}/...``), on Game of Life jobs of the server's own node set: every
    answer is a 2xx or a 4xx, a conflict names the state it found."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()  # one connection per thread

    def client(self) -> httpx.Client:
        if getattr(self.local, "client", None) is None:
            self.local.client = httpx.Client(base_url=self.url, timeout=60)
        return self.local.client

    def submit(self, steps: int) -> str:
        prompt = {
            "1": {
                "class_type": "LifeSeed",
                "inputs": {"width": 128, "height": 128, "density": 0.3, "seed": steps},
            },
            "2": {"class_type": "LifeSimulate", "inputs": {"grid": ["1", 0], "generations": steps}},
            "3": {"class_type": "LifeGridToText", "inputs": {"grid": ["2", 0]}},
            "4": {
                "class_type": "MidrunSaveText",
                "inputs": {"text": ["3", 0], "filename_prefix": "race"},
            },
        }
        answer = self.client().post("/prompt", json={"prompt": prompt})
        assert answer.status_code == 200, answer.text
        return answer.json()["prompt_id"]

    def fire(self, action: str, job_id: str, value: int) -> Any:
        base, http = f"/api/jobs/{job_id}", self.client()
        if action == "edit":
            answer = http.put(
                f"{base}/params",
                json={"node_id": "2", "input": "generations", "value": 40 + 20 * value},
            )
        elif action == "undo":
            answer = http.delete(f"{base}/params")
        else:
            body = {"reason": "random abort"} if action == "abort" else {}
            answer = http.post(f"{base}/{action}", json=body)
        assert answer.status_code < 500, f"{action}: {answer.status_code} {answer.text}"
        data = answer.json()
        if answer.status_code >= 400:
            error = data["error"]
            if answer.status_code == 409 and error["type"] == "job_state_conflict":
                return JobConflict(job_id, action, error["state"], error["message"])
            assert action == "edit", (answer.status_code, error)
            return MidrunError(error["message"])
        if action == "undo":
            return data["undone"]
        if action == "edit":
            return data
        return SimpleNamespace(state=JobState(data["state"]), request=data["request"])

    def check_completed(self, job: Any) -> None:
        generations = job.workflow["2"]["inputs"]["generations"]
        assert job.outputs["4"]["text"], job.outputs
        assert generations >= 0


def make_machine(service: Jobs, driver: Direct | OverHTTP) -> type[RuleBasedStateMachine]:
    class ControlRace(RuleBasedStateMachine):
        jobs = Bundle("jobs")

        def __init__(self) -> None:
            super().__init__()
            self.pool = WorkerPool(service, ["cpu", "cpu"]).start()
            self.ids: list[str] = []
            self.terminal: dict[str, JobState] = {}
            # Per job, what the accepted requests wrote to its log, from their answers:
            # a pause answered "pausing" wrote pausing, one answered "paused" (a
            # queued job) wrote paused; an abort answered "aborted" (queued or paused)
            # wrote aborted, any other wrote aborting.
            self.expected: dict[str, Counter[str]] = {}

        @rule(target=jobs, steps=st.integers(3, 150))
        def submit(self, steps: int) -> str:
            job_id = driver.submit(steps)
            self.ids.append(job_id)
            self.expected[job_id] = Counter()
            return job_id

        @rule(requests=st.lists(st.tuples(st.sampled_from(ACTIONS), jobs, st.integers(-3, 3)),
                                min_size=1, max_size=6))  # fmt: skip
        def burst(self, requests: list[tuple[str, str, int]]) -> None:
            """Fire the requests at once from separate threads."""
            outcomes: list[tuple[str, str, Any]] = []
            lock = threading.Lock()

            def fire(action: str, job_id: str, value: int) -> None:
                answer = driver.fire(action, job_id, value)
                with lock:
                    outcomes.append((action, job_id, answer))

            threads = [threading.Thread(target=fire, args=r) for r in requests]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
                assert not t.is_alive(), "a control request hung"
            assert len(outcomes) == len(requests)  # exactly one answer each
            for action, job_id, answer in outcomes:
                if isinstance(answer, MidrunError):
                    if isinstance(answer, JobConflict):
                        assert answer.extra_info["state"] in {s.value for s in JobState}
                    continue
                self.record(action, job_id, answer)

        def record(self, action: str, job_id: str, answer: Any) -> None:
            expected = self.expected[job_id]
            if action == "pause":
                assert answer.state in (PG, P), answer.state
                expected["pausing" if answer.state == PG else "paused by request"] += 1
            elif action == "abort":
                if answer.state == JobState.ABORTED:
                    expected["aborted by request"] += 1
                else:
                    assert answer.request == "abort", answer
                    expected["aborting"] += 1
            elif action == "resume":
                assert answer.state == Q, answer.state
                expected["resumed"] += 1
            elif action == "edit":
                expected["edited"] += 1
            else:
                expected["edit_undone"] += len(answer)

        def check(self) -> dict[str, tuple[JobState, str | None, list[str]]]:
            """The model against one snapshot of the database: every job is there, its
            state and pending request are what its audit log leads to, and the log holds
            exactly what the accepted requests wrote (no more, no fewer)."""
            rows = snapshot(service, self.ids)
            assert set(rows) == set(self.ids), "a job was lost"
            for job_id, (state, request, kinds) in rows.items():
                predicted, abort_pending, counts = replay(job_id, kinds)
                assert state == predicted, f"{job_id} is {state}, its log says {predicted}"
                if abort_pending:
                    assert request == "abort", f"{job_id}: abort logged, request {request}"
                for kind in ("pausing", "paused by request", "aborting",
                             "aborted by request", "resumed", "edited", "edit_undone"):  # fmt: skip
                    assert counts[kind] == self.expected[job_id][kind], (
                        f"{job_id}: {self.expected[job_id][kind]} accepted {kind}, "
                        f"{counts[kind]} logged ({kinds})"
                    )
                # The worker pauses only a job asked to pause, at most once per request.
                assert counts["paused by worker"] <= counts["pausing"]
                assert counts["aborted by worker"] <= counts["aborting"]
                if job_id in self.terminal:
                    assert state == self.terminal[job_id], "a terminal state changed"
                elif state.terminal:
                    self.terminal[job_id] = state
            return rows

        @invariant()
        def the_database_matches_the_model(self) -> None:
            self.check()

        def teardown(self) -> None:
            try:
                for job_id in self.ids:
                    # Every state but the terminal ones takes an abort.
                    try:
                        self.record("abort", job_id, service.abort(job_id, "teardown"))
                    except JobConflict as exc:
                        assert exc.state.terminal or "already pending" in str(exc), exc
                    service.wait(job_id, timeout=60)
                rows = self.check()
                for job_id in self.ids:
                    final = service.get(job_id)
                    state, _, kinds = rows[job_id]
                    assert state.terminal and kinds[-1] == state.value
                    if state == JobState.COMPLETED:
                        driver.check_completed(final)
            finally:
                self.pool.stop()

    return ControlRace


RUNS = settings(max_examples=10, stateful_step_count=20, deadline=None)
# No health check is suppressed: none fires (they time data generation, which is quick
# here; the rules' time is the workers'). No deadline: a burst lasts as long as the
# workers take to answer, which the test does not control.


def test_concurrent_control_requests_keep_every_invariant(db, tmp_path) -> None:
    testnodes.reset()
    service = Jobs(db, testnodes.registry(), data_dir=tmp_path, settings=FAST)
    run_state_machine_as_test(make_machine(service, Direct(service)), settings=RUNS)


def test_concurrent_http_control_requests_keep_every_invariant(db, tmp_path) -> None:
    """The same race through a real server's HTTP API, its workers on the same database:
    no request gets a 5xx, and the invariants hold."""
    from tests.server.conftest import make_config, start_server

    url = db.url.render_as_string(hide_password=False)
    live = start_server(make_config(tmp_path, database_url=url, workers=False), settings=FAST)
    try:
        machine = make_machine(live.server.jobs, OverHTTP(live.url))
        run_state_machine_as_test(machine, settings=settings(RUNS, max_examples=5))
    finally:
        live.stop()


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
