"""The history of ended jobs (completed, failed, aborted), as ComfyUI's history lists it:
oldest first, without the jobs a user took out of it. Hiding a job keeps its row and its
audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from midrun.jobs.records import Job
from midrun.jobs.states import TERMINAL
from midrun.store.schema import now

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

ENDED = sorted(TERMINAL)  # the job states that never change


def ended_jobs(service: Jobs) -> list[Job]:
    """Ended jobs not hidden, in the order they ended."""
    ended = [j for j in service.list(states=ENDED) if j.hidden_at is None]
    ended.sort(key=lambda j: (j.finished_at or j.queued_at or now(), j.number))
    return ended


def hide(service: Jobs, ids: list[str] | None, owner: str | None) -> None:
    """Take ended jobs out of the history: those of ``ids`` (all with None), only
    ``owner``'s unless it is None."""
    with service.db.begin() as conn:
        service.store.hide(conn, [s.value for s in ENDED], ids, owner)
