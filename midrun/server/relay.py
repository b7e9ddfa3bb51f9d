"""The relay: events of workers in other processes. Those processes share only the
database with this one, so the audit log is tailed and the rows another process wrote are
published to this process's hub under the names their writer announced them with (the
audit log and the bus share one vocabulary, :class:`EventKind`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from midrun.core.events import EventKind, kind_of
from midrun.jobs.records import ORIGIN, announced

if TYPE_CHECKING:
    from midrun.server.hub import Hub

log = logging.getLogger(__name__)


class Relay:
    """Events from workers in other processes: the audit log is tailed and rows written
    by another process are published here (the database is the only thing shared)."""

    def __init__(self, hub: Hub, interval: float = 0.25) -> None:
        self.hub = hub
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.last_id = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        from starlette.concurrency import run_in_threadpool

        store = self.hub.server.jobs.store
        self.last_id = await run_in_threadpool(store.last_event_id)
        while True:
            await asyncio.sleep(self.interval)
            try:
                rows = await run_in_threadpool(store.events, None, since_id=self.last_id)
            except Exception:
                log.exception("reading the audit log failed")
                continue
            for row in rows:
                self.last_id = max(self.last_id, row["id"])
                data = row.get("data") or {}
                if data.get("origin") == ORIGIN or kind_of(row["kind"]) is None:
                    continue  # this process published it already (or a row of old words)
                self.hub.publish(remote_event(row))


def remote_event(row: dict[str, Any]) -> dict[str, Any]:
    """An audit row as the event its writer announced in its own process (the audit log
    and the bus share one vocabulary, :class:`EventKind`)."""
    columns = {name: row.get(name) for name in ("step", "node_id", "actor", "old", "new")}
    payload = announced(row["job_id"], row.get("data") or {}, **columns)
    return {"type": EventKind(row["kind"]).type, **payload, "remote": True}
