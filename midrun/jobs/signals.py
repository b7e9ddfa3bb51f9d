"""In-process signals: how a control request made in this process reaches a worker at its
next control point without waiting for the database poll, and how events reach
subscribers (the server's WebSocket, tests). The database stays the source of truth;
requests from other processes arrive through the poll (``JobSettings.poll_interval``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from midrun.core.events import EventKind

log = logging.getLogger(__name__)

@dataclass(slots=True)
class JobSignal:
    """A running job's mailbox: set by control calls, read by its hook."""

    changed: threading.Event = field(default_factory=threading.Event)
    node_id: str | None = None  # where the job stands (kept by its hook)
    step: int | None = None
    total_steps: int | None = None


class Signals:
    """Per-job mailboxes plus a wake-up for idle workers."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobSignal] = {}
        self._lock = threading.Lock()
        self.work = threading.Condition()
        self.pipeline = threading.Condition()

    def open(self, job_id: str) -> JobSignal:
        with self._lock:
            signal = self._jobs.get(job_id)
            if signal is None:
                signal = self._jobs[job_id] = JobSignal()
            return signal

    def get(self, job_id: str) -> JobSignal | None:
        return self._jobs.get(job_id)

    def close(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def poke(self, job_id: str) -> None:
        """Something changed for ``job_id``: its hook re-reads the row at the next point."""
        signal = self._jobs.get(job_id)
        if signal is not None:
            signal.changed.set()

    def poke_all(self) -> None:
        for signal in list(self._jobs.values()):
            signal.changed.set()

    def wake_workers(self, count: int | None = None) -> None:
        """Wake ``count`` idle workers (all if None): one per new job is enough."""
        with self.work:
            if count is None:
                self.work.notify_all()
            else:
                self.work.notify(count)

    def wait_for_work(self, timeout: float) -> None:
        with self.work:
            self.work.wait(timeout)

    def pipeline_resumed(self) -> None:
        """The pipeline runs again (said by this process): workers holding off wake."""
        with self.pipeline:
            self.pipeline.notify_all()
        self.wake_workers()

    def wait_for_pipeline(self, timeout: float) -> None:
        """While the pipeline is paused, idle workers wait here rather than on new work:
        a burst of submissions then costs no claim attempts. A resume in another process
        is seen at the next poll (``timeout``)."""
        with self.pipeline:
            self.pipeline.wait(timeout)


Listener = Callable[[dict[str, Any]], None]


class EventBus:
    """Fan-out of job events (``{"type": "midrun.paused", "job_id": ..., ...}``) to
    listeners in this process. Listeners must be quick; they run on the emitter's thread."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def wait_until(self, job_ids: Iterable[str], ready: Callable[[], bool], timeout: float,
                   poll: float) -> bool:  # fmt: skip
        """Block until ``ready()`` holds (True) or ``timeout`` seconds pass (False).
        ``ready`` (which reads the jobs' rows) is asked again whenever an event about one
        of ``job_ids`` is announced in this process, and every ``poll`` seconds for
        workers in other processes."""
        woken = threading.Event()
        ids = set(job_ids)

        def listener(event: dict[str, Any]) -> None:
            if event.get("job_id") in ids:
                woken.set()

        deadline = time.monotonic() + timeout
        unsubscribe = self.subscribe(listener)
        try:
            while True:
                woken.clear()  # before the read: an event during it wakes the next wait
                if ready():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                woken.wait(min(left, poll))
        finally:
            unsubscribe()

    def emit(self, kind: EventKind, **data: Any) -> None:
        """Announce an event (a transient one; recorded kinds go through
        ``JobStore.record``, which announces them)."""
        kind = EventKind(kind)
        event = {"type": kind.type, **data}
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the job
                log.exception("event listener failed on %s", kind)
