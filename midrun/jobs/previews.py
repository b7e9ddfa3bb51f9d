"""A job's intermediate previews: files in the artifact store, indexed in
``job_debug_state.intermediate_previews_json`` (step, time, method, file), with retention."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from midrun.core.errors import MidrunError, disk_full
from midrun.core.events import EventKind

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

log = logging.getLogger(__name__)

_EXT = {"image/jpeg": "jpg", "image/webp": "webp", "image/png": "png"}
MAX_EVERY = 1000


class InvalidPreviewInterval(MidrunError):
    type = "invalid_preview_interval"


def preview_every(extra_data: Mapping[str, Any] | None) -> int | None:
    """A job's own preview interval (``extra_data.midrun.preview_every``: a preview every
    N sampler steps), if it asks for one; raises :class:`InvalidPreviewInterval`."""
    options = (extra_data or {}).get("midrun")
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise InvalidPreviewInterval("extra_data.midrun must be an object")
    every = options.get("preview_every")
    if every is None:
        return None
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_EVERY:
        raise InvalidPreviewInterval(
            f"extra_data.midrun.preview_every must be a whole number of steps from 1 to "
            f"{MAX_EVERY}, got {every!r}")  # fmt: skip
    return every


class PreviewRecorder:
    """Plugs the diffusion layer's PreviewHook into a job: each preview is written as
    ``jobs/{id}/previews/{node}_{step}.{ext}`` and appended to the job's index. ``runtime``
    is the one the job runs on (its worker's): TAESD decoders load onto its device."""

    def __init__(self, service: Jobs, job_id: str, every_steps: int | None = None,
                 runtime: Any = None) -> None:  # fmt: skip
        from midrun.diffusion.previews import PreviewHook

        self.service = service
        self.job_id = job_id
        self._lock = threading.Lock()
        settings = service.preview_settings
        if every_steps is not None:
            settings = replace(settings, every_steps=every_steps)
        self.hook = PreviewHook(self._record, settings, runtime)

    def _record(self, preview: Any) -> None:
        ext = _EXT.get(preview.mime, "bin")
        key = f"jobs/{self.job_id}/previews/{preview.node_id}_{preview.step:05d}.{ext}"
        try:
            self.service.artifacts.put(key, preview.data)
        except OSError as exc:
            if not disk_full(exc):
                raise
            log.warning("job %s: no room for its preview at step %s", self.job_id, preview.step)
            return  # a preview is a view: the run goes on without it
        entry = {
            "step": preview.step,
            "total_steps": preview.total_steps,
            "node_id": preview.node_id,
            "time": datetime.fromtimestamp(preview.created, UTC).isoformat(),
            "method": preview.method,
            "mime": preview.mime,
            "width": preview.width,
            "height": preview.height,
            "file": key,
        }
        with self._lock, self.service.db.begin() as conn:
            debug = self.service.store.read_debug(conn, self.job_id)
            index = [e for e in debug["intermediate_previews_json"] if e["file"] != key]
            self.service.store.update_debug(conn, self.job_id,
                                            intermediate_previews_json=[*index, entry])  # fmt: skip
        self.service.bus.emit(EventKind.PREVIEW_SAVED, job_id=self.job_id, **entry)

    def close(self) -> None:
        self.hook.close()

    def retain(self) -> None:
        """On completion keep the last ``previews_keep`` and the final preview (aborted,
        failed and paused jobs keep everything for inspection: this is not called)."""
        keep = self.service.settings.previews_keep
        with self._lock:
            with self.service.db.begin() as conn:
                index = self.service.store.read_debug(conn, self.job_id)[
                    "intermediate_previews_json"
                ]
                kept = index[-keep:] if keep > 0 else index[-1:]
                self.service.store.update_debug(conn, self.job_id,
                                                intermediate_previews_json=kept)  # fmt: skip
            for entry in index:  # the files go once the index no longer names them
                if entry not in kept:
                    self.service.artifacts.delete(entry["file"])
