"""The job state machine, in one place.

    queued -> running -> pausing -> paused -> queued (resumed) -> running -> completed
                 \\            \\        \\-> aborted (partial results kept)
                  \\-> failed   \\-> aborted

A resumed job goes back to the queue (optionally to its front) so that any worker, in any
process, can take it; ``running -> queued`` is crash recovery. A queued job may be held
(``queued -> paused``). Terminal states never change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from midrun.core.errors import MidrunError


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.ABORTED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.PAUSED, JobState.ABORTED}),
    JobState.RUNNING: frozenset(
        {JobState.PAUSING, JobState.COMPLETED, JobState.FAILED, JobState.ABORTED,
         JobState.QUEUED}
    ),
    # pausing -> running: a pause cancelled (a pipeline pause that could not complete).
    JobState.PAUSING: frozenset(
        {JobState.PAUSED, JobState.COMPLETED, JobState.FAILED, JobState.ABORTED,
         JobState.QUEUED, JobState.RUNNING}
    ),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.ABORTED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.ABORTED: frozenset(),
}

# Which states each control action accepts (the rest answer with a conflict).
ACTIONS: dict[str, frozenset[JobState]] = {
    "pause": frozenset({JobState.QUEUED, JobState.RUNNING}),
    "resume": frozenset({JobState.PAUSED}),
    "abort": frozenset({JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED}),
    "edit": frozenset({JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED}),
    "undo": frozenset({JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED}),
}

_HINTS = {
    JobState.PAUSING: "it is pausing; wait for it to be paused",
    JobState.PAUSED: "it is already paused",
    JobState.QUEUED: "it has not started",
    JobState.COMPLETED: "it has completed",
    JobState.FAILED: "it has failed",
    JobState.ABORTED: "it was aborted",
}


class JobConflict(MidrunError):
    """A control request that the job's current state does not allow (HTTP 409)."""

    type = "job_state_conflict"

    def __init__(self, job_id: str, action: str, state: JobState | str, why: str = "") -> None:
        state = JobState(state)
        reason = why or _HINTS.get(state, f"it is {state}")
        super().__init__(
            f"Cannot {action} job {job_id}: {reason}", job_id=job_id, action=action,
            state=state.value,
        )
        self.state = state


class JobNotFound(MidrunError):
    type = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job {job_id!r}", job_id=job_id)


def check_action(job_id: str, action: str, state: JobState, request: str | None, *,
                 label: str | None = None, running: str = "") -> None:  # fmt: skip
    """Raise :class:`JobConflict` unless ``action`` may act on a job in ``state``
    (``label`` names the action in the conflict, e.g. ``step over`` for a resume;
    ``running`` says why a running job is refused, with the fix)."""
    name = label or action
    if state not in ACTIONS[action]:
        raise JobConflict(job_id, name, state, running if state == JobState.RUNNING else "")
    if request == "abort" and action != "abort":
        raise JobConflict(job_id, name, state, "an abort is pending")
    if request == "abort" and action == "abort":
        raise JobConflict(job_id, name, state, "an abort is already pending")


def ended_as(ran: JobState, state: JobState, request: str | None) -> JobState:
    """The state a job's run leaves it in: what the run ended as (``paused`` for a
    suspend), settled against the row (``state``, ``request``) as it is now:

    * suspended while an abort was asked: aborted (the abort was accepted, so it is not
      lost to the pause);
    * suspended while the row says running (its pause was cancelled meanwhile, or no
      pause was asked): back to the queue, to continue from its saved run."""
    if ran == JobState.PAUSED and request == "abort":
        return JobState.ABORTED
    if ran == JobState.PAUSED and state == JobState.RUNNING:
        return JobState.QUEUED
    return ran


def check_transition(job_id: str, current: JobState, target: JobState, **context: Any) -> None:
    if target not in TRANSITIONS[current]:
        raise JobConflict(
            job_id, f"move to {target.value}", current, f"{current.value} -> {target.value} "
            "is not a transition of the job state machine",
        )
