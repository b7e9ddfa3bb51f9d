"""Edit commands on a job: a list of edits made as one (withdrawn again if one of them is
refused), undo, and the view of a job's edits that both answer with. The server's routes
and the command line's embedded client call these; whether one edit is valid and how it
applies is decided in :mod:`midrun.engine.edits` (through :meth:`Jobs.edit`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from midrun.core.errors import MidrunError

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

#: ``(node_id, input, value)``: one edit as a client asks for it.
EditRequest = tuple[str, str, Any]


class EditNotFound(MidrunError):
    type = "edit_not_found"


def edits_view(service: Jobs, job_id: str) -> dict[str, Any]:
    """A job's edits: all of them, the pending ones, and per ``node.input`` what changed."""
    job = service.get(job_id)
    edits = service.store.edits(job_id)
    debug = service.debug_state(job_id)
    return {"job_id": job_id, "state": job.state.value, "edits": edits,
            "pending": [e for e in edits if e["status"] == "pending"],
            "modified_params": debug["modified_params_json"]}  # fmt: skip


def make_edits(service: Jobs, job_id: str, edits: Sequence[EditRequest], actor: str
               ) -> dict[str, Any]:  # fmt: skip
    """Make the edits in order; if one is refused, the ones made before it are withdrawn
    (where they still can be) and the refusal says which were withdrawn and which kept."""
    made: list[int] = []
    for node_id, input_name, value in edits:
        try:
            made.append(service.edit(job_id, node_id, input_name, value, actor=actor)["edit_id"])
        except MidrunError as exc:
            if made:
                withdrawn = _withdraw(service, job_id, made, actor)
                exc.extra_info.update(withdrawn_edits=withdrawn,
                                      kept_edits=[e for e in made if e not in withdrawn])
            raise
    return {**edits_view(service, job_id), "edit_ids": made}


def _withdraw(service: Jobs, job_id: str, edit_ids: list[int], actor: str) -> list[int]:
    """The compensation of :func:`make_edits`: undo what it made, newest first."""
    withdrawn = []
    for edit_id in reversed(edit_ids):
        try:
            service.undo(job_id, edit_id, actor=actor)
            withdrawn.append(edit_id)
        except MidrunError:
            pass  # already applied to the running job: it stays (and is reported)
    return withdrawn


def undo_edits(service: Jobs, job_id: str, edit_id: int | None, actor: str
               ) -> dict[str, Any]:  # fmt: skip
    """Withdraw one pending edit (:class:`EditNotFound` if the job never had it), or all."""
    if edit_id is not None and all(e["id"] != edit_id for e in service.store.edits(job_id)):
        raise EditNotFound(f"Job {job_id} has no edit {edit_id}; "
                           f"GET /api/jobs/{job_id}/state lists its edits", edit_id=edit_id)
    undone = service.undo(job_id, edit_id, actor=actor)
    return {**edits_view(service, job_id), "undone": undone}
