"""The one vocabulary of job events: what the in-process bus emits, what the audit log
(``job_events``) records, what the relay forwards from other processes and what the
canvas store listens to (``/extensions/midrun/lib/events.js`` is generated from this).

A kind is *recorded* (a row of the audit log, then announced) or *transient* (announced
only: progress, previews, node starts). A recorded kind that is a request's intent
(``pausing``, ``aborting``, ``resumed``) is announced before its transaction commits, so
a worker's answer to it is always heard after it; the others are announced once their
transaction has committed. On the wire a kind is ``"midrun." + kind``.
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "midrun."


class EventKind(StrEnum):
    # A job's lifecycle: each leaves the job in a state (``job_state``).
    QUEUED = "queued"
    RUNNING = "running"  # a worker took it (``continued``: from a checkpoint)
    PAUSING = "pausing"  # a pause was asked (by a user, a breakpoint, a step, the pipeline)
    PAUSED = "paused"
    RESUMED = "resumed"  # back in the queue
    ABORTING = "aborting"
    ABORTED = "aborted"
    COMPLETED = "completed"
    FAILED = "failed"
    RECOVERED = "recovered"  # its worker died; requeued (or paused, or aborted)
    PAUSE_CANCELLED = "pause_cancelled"  # a pipeline pause rolled back: running again
    # Debugging.
    BREAKPOINT_HIT = "breakpoint_hit"
    STEP_REACHED = "step_reached"
    BREAKPOINT_SET = "breakpoint_set"
    BREAKPOINT_ENABLED = "breakpoint_enabled"
    BREAKPOINT_DISABLED = "breakpoint_disabled"
    BREAKPOINT_REMOVED = "breakpoint_removed"
    LOGPOINT = "logpoint"
    # Edits.
    EDITED = "edited"
    EDIT_UNDONE = "edit_undone"
    EDIT_APPLIED = "edit_applied"
    EDIT_REFUSED = "edit_refused"
    # The pipeline and batches.
    PIPELINE_PAUSED = "pipeline_paused"
    PIPELINE_RESUMED = "pipeline_resumed"
    PIPELINE_PAUSE_ROLLED_BACK = "pipeline_pause_rolled_back"
    BATCH_STOPPED = "batch_stopped"
    BATCH_PROGRESS = "batch_progress"
    # A run's progress (transient).
    CACHED = "cached"
    NODE_STARTED = "node_started"
    NODE_EXECUTED = "node_executed"
    PROGRESS = "progress"
    PREVIEW_SAVED = "preview_saved"
    IMAGE_SENT = "image_sent"  # a SaveImageWebsocket image, for the prompt's client

    @property
    def type(self) -> str:
        """The event's name on the wire: ``midrun.<kind>``."""
        return PREFIX + self.value

    @property
    def recorded(self) -> bool:
        """Whether it is written to the audit log (else it is only announced)."""
        return self not in TRANSIENT

    @property
    def announced_first(self) -> bool:
        """Announced before its transaction commits (a request's intent)."""
        return self in INTENTS

    @property
    def job_state(self) -> str | None:
        """The state a job is in after this event, if the event says."""
        return JOB_STATE.get(self)


TRANSIENT = frozenset({
    EventKind.LOGPOINT, EventKind.BATCH_PROGRESS, EventKind.CACHED, EventKind.NODE_STARTED,
    EventKind.NODE_EXECUTED, EventKind.PROGRESS, EventKind.PREVIEW_SAVED, EventKind.IMAGE_SENT,
})  # fmt: skip
INTENTS = frozenset({EventKind.PAUSING, EventKind.ABORTING, EventKind.RESUMED})
JOB_STATE = {
    EventKind.QUEUED: "queued", EventKind.RUNNING: "running", EventKind.PAUSING: "pausing",
    EventKind.PAUSED: "paused", EventKind.RESUMED: "queued", EventKind.ABORTING: "aborting",
    EventKind.ABORTED: "aborted", EventKind.COMPLETED: "completed",
    EventKind.FAILED: "failed", EventKind.PAUSE_CANCELLED: "running",
}  # fmt: skip


def kind_of(name: str) -> EventKind | None:
    """The kind an event name (``midrun.paused`` or ``paused``) stands for, if any."""
    try:
        return EventKind(name.removeprefix(PREFIX))
    except ValueError:
        return None
