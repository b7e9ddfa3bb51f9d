"""One vocabulary of events (midrun.core.events.EventKind): what the bus announces is what
the audit log records, under the same names, each once, after its transaction commits
(a request's intent before), and the canvas store names events from the same enum."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from midrun.core.events import TRANSIENT, EventKind, kind_of
from midrun.jobs.states import JobState
from midrun.server.frontend import events_module
from tests.jobs.conftest import result, ticker

WEB = Path(__file__).resolve().parents[2] / "midrun" / "server" / "web"


def test_every_kind_has_one_wire_name_and_states_are_consistent() -> None:
    assert len({k.type for k in EventKind}) == len(EventKind)
    for kind in EventKind:
        assert kind.type == "midrun." + kind.value and kind_of(kind.type) is kind
        assert kind.recorded is (kind not in TRANSIENT)
    assert {k for k in EventKind if k.announced_first} == {
        EventKind.PAUSING, EventKind.ABORTING, EventKind.RESUMED}  # fmt: skip
    assert all(k.recorded for k in EventKind if k.job_state)
    assert {k.job_state for k in EventKind if k.job_state} <= {s.value for s in JobState} | {
        "aborting"}  # fmt: skip
    assert kind_of("midrun.started") is None and kind_of("pause_requested") is None


def test_what_the_bus_announces_is_what_the_audit_log_records(service, pool) -> None:
    heard: list[dict[str, Any]] = []
    service.bus.subscribe(heard.append)
    step_two = threading.Event()
    service.bus.subscribe(lambda e: step_two.set()
                          if e["type"] == EventKind.PROGRESS.type and e["step"] == 2 else None)
    job = service.submit(ticker(steps=6, delay=0.01))
    assert step_two.wait(30)
    service.pause(job.id)
    service.wait(job.id, [JobState.PAUSED])
    service.edit(job.id, "2", "gain", 2)
    service.resume(job.id)
    done = service.wait(job.id)
    assert done.state == JobState.COMPLETED and result(done)[0] > 6

    logged = [e["kind"] for e in service.events(job.id)]
    mine = [e for e in heard if e.get("job_id") == job.id]
    announced = [e["type"] for e in mine if kind_of(e["type"]).recorded]
    assert announced == [EventKind(k).type for k in logged]
    assert logged == ["queued", "running", "pausing", "paused", "edited", "resumed",
                      "running", "edit_applied", "completed"]  # fmt: skip
    # Every event on the bus is a kind of the enum; the transient ones are not logged.
    assert all(kind_of(e["type"]) is not None for e in heard)
    assert {kind_of(e["type"]) for e in mine if not kind_of(e["type"]).recorded} >= {
        EventKind.PROGRESS, EventKind.NODE_STARTED, EventKind.NODE_EXECUTED}  # fmt: skip
    running = [e for e in mine if e["type"] == EventKind.RUNNING.type]
    assert [e["continued"] for e in running] == [False, True]
    edited = next(e for e in mine if e["type"] == EventKind.EDITED.type)
    assert (edited["node_id"], edited["input"], edited["old"], edited["new"]) == (
        "2", "gain", 1, 2)  # fmt: skip


def test_a_result_is_announced_only_once_its_transaction_has_committed(service) -> None:
    seen_state: list[str] = []

    def listener(event: dict[str, Any]) -> None:
        if event["type"] == EventKind.PAUSED.type:
            seen_state.append(service.get(event["job_id"]).state.value)  # another connection

    service.bus.subscribe(listener)
    job = service.submit(ticker(steps=3, delay=0))
    service.pause(job.id)  # a queued job is held at once: "paused" by the request itself
    assert seen_state == ["paused"]


def test_a_failed_transaction_announces_nothing(service) -> None:
    heard: list[dict[str, Any]] = []
    service.bus.subscribe(heard.append)
    job = service.submit(ticker(steps=3, delay=0))
    heard.clear()
    try:
        with service.db.begin() as conn:
            service.store.record(conn, job.id, EventKind.PAUSED, by="test")
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert heard == []
    assert [e["kind"] for e in service.events(job.id)] == ["queued"]


def test_the_canvas_names_events_from_the_enum() -> None:
    module = events_module()
    for kind in EventKind:
        assert f'"{kind.name}": "{kind.type}"' in module
    assert '"midrun.resumed": "queued"' in module and '"midrun.pausing": "pausing"' in module
    for path in WEB.rglob("*.js"):
        literal = re.findall(r'"midrun\.([a-z_]+)"', path.read_text(encoding="utf-8"))
        names = {kind.value for kind in EventKind} & set(literal)
        assert not names, f"{path.name} spells events {sorted(names)}: use events.js"
