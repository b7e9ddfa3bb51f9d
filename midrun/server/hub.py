"""The event hub: every WebSocket and SSE client, and the translation of job events into
ComfyUI's messages.

Job events arrive from the job service's in-process bus (worker threads) and, for workers
in other processes, from the database's audit log (:class:`Relay`). A run's ComfyUI
messages (execution_start, executing, progress, progress_state, executed, previews,
execution_success/error/interrupted) go to the socket whose id the job was submitted with,
as ComfyUI routes them; midrun's own ``midrun.*`` events go to every client allowed to see
the job. Each client has its own queue and sender task, so a slow client never holds up a
run or another client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from midrun.core.events import EventKind, kind_of
from midrun.jobs.states import TERMINAL
from midrun.server.auth import User
from midrun.server.relay import Relay

if TYPE_CHECKING:
    from midrun.server.state import Server

log = logging.getLogger(__name__)

# Binary frame types (ComfyUI's protocol): a legacy preview, and one with metadata.
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMATS = {"image/jpeg": 1, "image/png": 2}

SERVER_FLAGS = {
    "supports_preview_metadata": True,
    "max_upload_size": 100 * 1024 * 1024,
    "assets": False,
    "node_replacements": True,
    "midrun": True,
}

# Events that are translated into ComfyUI messages and not forwarded as midrun.* too.
_INTERNAL = {k.type for k in (EventKind.NODE_STARTED, EventKind.NODE_EXECUTED, EventKind.CACHED)}
_QUEUE_CHANGES = {k.type for k in (EventKind.QUEUED, EventKind.RUNNING, EventKind.COMPLETED,
                                   EventKind.FAILED, EventKind.ABORTED, EventKind.PAUSED,
                                   EventKind.RESUMED)}  # fmt: skip
_ENDED = {k.type for k in EventKind if k.job_state in {s.value for s in TERMINAL}}
QUEUE_SIZE = 2000  # per client; a client this far behind is dropped
MAX_BOUND_SIDS = 100_000  # clientIds remembered with the user who opened them


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Client:
    sid: str
    user: User | None
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    flags: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None  # an SSE client may follow one job
    alive: bool = True

    def offer(self, message: Any) -> None:
        if not self.alive:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("client %s is too slow; dropping it", self.sid)
            self.alive = False

    def may_see(self, owner: str | None) -> bool:
        return self.user is None or self.user.may_see(owner)


@dataclass
class RunView:
    """What the hub knows of one job's run, for ComfyUI's cumulative messages."""

    client_id: str | None
    owner: str | None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # progress_state
    executed: list[str] = field(default_factory=list)
    current: str | None = None
    class_types: dict[str, str] = field(default_factory=dict)


class Hub:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients: dict[str, Client] = {}
        self.sid_owners: dict[str, str | None] = {}  # who first opened each clientId
        self.runs: dict[str, RunView] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Any = None
        self.relay: Relay | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._learning: dict[str, list[dict[str, Any]]] = {}  # job id -> events held

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._unsubscribe = self.server.jobs.bus.subscribe(self._from_thread)
        self.relay = Relay(self)
        self.relay.start()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.relay is not None:
            await self.relay.stop()
        for client in list(self.clients.values()):
            client.offer(None)

    def remember(self, job_id: str, client_id: str | None, owner: str | None,
                 workflow: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Note a submission's socket and owner (so its events need no lookup)."""
        view = RunView(client_id, owner)
        if workflow:
            view.class_types = {n: d.get("class_type", "") for n, d in workflow.items()
                                if isinstance(d, dict)}  # fmt: skip
        self.runs[job_id] = view

    # -- clients ---------------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        """``/ws?clientId=``: ComfyUI's socket, carrying midrun's events as well."""
        await ws.accept()
        user = ws.scope.get("user")
        sid = self._bind(ws.query_params.get("clientId"), user)
        old = self.clients.get(sid)
        if old is not None:
            old.offer(None)  # a reconnect with the same id replaces the old socket
        client = Client(sid, user)
        # The hello (the status naming the sid) is the socket's first message: the
        # status is read before the client is listed, so no broadcast can come ahead.
        status = await self._status()
        self.clients[sid] = client
        client.offer({"type": "status", "data": {"status": status, "sid": sid}})
        for job_id, view in self.runs.items():
            if view.client_id == sid and view.current is not None:
                client.offer({"type": "executing",
                              "data": {"node": view.current, "prompt_id": job_id}})  # fmt: skip
        sender = asyncio.create_task(self._send_loop(ws, client))
        try:
            first = True
            while True:
                text = await ws.receive_text()
                if first:
                    first = False
                    self._handshake(client, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            client.alive = False
            if self.clients.get(sid) is client:
                del self.clients[sid]
            sender.cancel()

    def _bind(self, asked: str | None, user: User | None) -> str:
        """The id a new socket gets: the one it asked for, unless another user opened
        that one first; then a fresh one, which ComfyUI's clients take from the first
        ``status`` message as they do when they ask for none."""
        name = user.name if user is not None else None
        sid = asked if asked and self.sid_owners.get(asked, name) == name else uuid.uuid4().hex
        self.sid_owners.pop(sid, None)
        self.sid_owners[sid] = name  # newest last
        while len(self.sid_owners) > MAX_BOUND_SIDS:  # the oldest bindings go first
            self.sid_owners.pop(next(iter(self.sid_owners)))
        return sid

    def _handshake(self, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            data = message.get("data")
            client.flags = dict(data) if isinstance(data, dict) else {}
            client.offer({"type": "feature_flags", "data": SERVER_FLAGS})

    async def _send_loop(self, ws: WebSocket, client: Client) -> None:
        try:
            while True:
                message = await client.queue.get()
                if isinstance(message, asyncio.Future):  # a preview being read: its turn
                    message = await message
                    if message is None:
                        continue
                if message is None or not client.alive:
                    await ws.close()
                    return
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_text(json.dumps(message, default=str))
        except Exception:  # the socket went away
            client.alive = False

    def sse_client(self, user: User | None, job_id: str | None) -> Client:
        client = Client("sse-" + uuid.uuid4().hex, user, job_id=job_id)
        self.clients[client.sid] = client
        return client

    def drop(self, client: Client) -> None:
        client.alive = False
        self.clients.pop(client.sid, None)

    # -- events ----------------------------------------------------------------------

    def _from_thread(self, event: dict[str, Any]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.publish, event)

    def publish(self, event: dict[str, Any]) -> None:
        """One job event (``{"type": "midrun.<kind>", "job_id": ...}``), on the loop."""
        job_id = event.get("job_id")
        if job_id is not None and (job_id not in self.runs or job_id in self._learning):
            # One lookup per unknown job; its events wait for it, in their order (also
            # those that come once the route has remembered the run meanwhile: a worker
            # that starts it at once must not get its node messages ahead of "running").
            waiting = self._learning.get(job_id)
            if waiting is None:
                self._learning[job_id] = [event]
                self._spawn(self._learn_then_publish(job_id))
            else:
                waiting.append(event)
            return
        view = self.runs.get(job_id) if job_id else None
        kind = event["type"]
        if view is not None:
            self._comfy(job_id, view, event)
        if kind not in _INTERNAL:
            data = {k: v for k, v in event.items() if k != "type"}
            message = {"type": kind, "data": data}
            for client in list(self.clients.values()):
                if client.job_id is not None and client.job_id != job_id:
                    continue
                if view is None or client.may_see(view.owner):
                    client.offer(message)
        if kind in _QUEUE_CHANGES:
            self._spawn(self._broadcast_status())
        if kind in _ENDED and job_id:
            self.runs.pop(job_id, None)

    async def _learn_then_publish(self, job_id: str) -> None:
        from starlette.concurrency import run_in_threadpool

        try:
            job = await run_in_threadpool(self.server.jobs.get, job_id)
        except Exception:
            job = None
        if job_id not in self.runs:
            extra = (job.extra_data or {}) if job else {}
            self.remember(job_id, extra.get("client_id"), job.owner if job else None,
                          job.workflow if job and job.kind == "workflow" else None)  # fmt: skip
        for event in self._learning.pop(job_id, []):
            self.publish(event)

    def _to_client(self, view: RunView, message: Any) -> None:
        if view.client_id is None:
            return
        client = self.clients.get(view.client_id)
        if client is not None and client.may_see(view.owner):
            client.offer(message)

    def _comfy(self, job_id: str, view: RunView, event: dict[str, Any]) -> None:
        """ComfyUI's messages for one run event."""
        kind = kind_of(event["type"])
        send = lambda t, d: self._to_client(view, {"type": t, "data": d})  # noqa: E731
        if kind == EventKind.RUNNING:  # a worker took it: the prompt starts executing
            send("execution_start", {"prompt_id": job_id, "timestamp": now_ms()})
        elif kind == "cached":
            nodes = list(event.get("nodes") or [])
            send("execution_cached", {"nodes": nodes, "prompt_id": job_id,
                                      "timestamp": now_ms()})  # fmt: skip
            for node in nodes:
                self._node_state(job_id, view, node, "finished", 1, 1)
            self._progress_state(job_id, view)
        elif kind == "node_started":
            node = event["node_id"]
            view.current = node
            view.class_types.setdefault(node, event.get("class_type", ""))
            self._node_state(job_id, view, node, "running", 0, 1)
            self._progress_state(job_id, view)
            send("executing", {"node": node, "display_node": node, "prompt_id": job_id})
        elif kind == "progress":
            node, value, total = event["node_id"], event["step"], event["total_steps"] or 1
            send("progress", {"value": value, "max": total, "prompt_id": job_id, "node": node})
            self._node_state(job_id, view, node, "running", value, total)
            self._progress_state(job_id, view)
        elif kind == "node_executed":
            node = event["node_id"]
            view.executed.append(node)
            state = view.nodes.get(node, {})
            top = state.get("max", 1)
            self._node_state(job_id, view, node, "finished", top, top)
            if event.get("ui"):
                send("executed", {"node": node, "display_node": node, "output": event["ui"],
                                  "prompt_id": job_id})  # fmt: skip
            self._progress_state(job_id, view)
        elif kind == "preview_saved":
            # Previews are decoded beside the run: one that comes after its node finished
            # is dropped, as ComfyUI never previews a node that is done (a client taking
            # the next node's binary frames as its images would take it for one).
            if event.get("node_id") == view.current:
                self._preview(job_id, view, event)
        elif kind == "image_sent":
            self._image_sent(job_id, view, event)
        elif kind == "completed":
            send("execution_success", {"prompt_id": job_id, "timestamp": now_ms()})
            view.current = None
            send("executing", {"node": None, "prompt_id": job_id})
        elif kind == "failed":
            error = event.get("error") or {}
            extra = error.get("extra_info") or {}
            node = extra.get("node_id") or view.current or ""
            send("execution_error", {
                "prompt_id": job_id, "node_id": node,
                "node_type": view.class_types.get(node, ""),
                "executed": list(view.executed),
                "exception_message": error.get("message", ""),
                "exception_type": extra.get("exception_type") or error.get("type", "Error"),
                "traceback": list(extra.get("traceback") or []),
                "current_inputs": {}, "current_outputs": list(view.executed),
                "timestamp": now_ms(),
            })  # fmt: skip
            view.current = None
            send("executing", {"node": None, "prompt_id": job_id})
        elif kind == "aborted":
            node = view.current or ""
            message = {"prompt_id": job_id, "node_id": node,
                       "node_type": view.class_types.get(node, ""),
                       "executed": list(view.executed), "timestamp": now_ms()}  # fmt: skip
            if view.client_id is None:  # ComfyUI broadcasts an interrupt nobody asked for
                for client in list(self.clients.values()):
                    client.offer({"type": "execution_interrupted", "data": message})
            else:
                send("execution_interrupted", message)
            view.current = None
            send("executing", {"node": None, "prompt_id": job_id})

    def _node_state(self, job_id: str, view: RunView, node: str, state: str,
                    value: float, top: float) -> None:  # fmt: skip
        view.nodes[node] = {"value": value, "max": top, "state": state, "node_id": node,
                            "prompt_id": job_id, "display_node_id": node,
                            "parent_node_id": None, "real_node_id": node}  # fmt: skip

    def _progress_state(self, job_id: str, view: RunView) -> None:
        data = {"prompt_id": job_id, "nodes": dict(view.nodes)}
        self._to_client(view, {"type": "progress_state", "data": data})

    def _preview(self, job_id: str, view: RunView, event: dict[str, Any]) -> None:
        """A sampler preview, fitted to ``preview_max_size`` (JPEG)."""
        artifacts, largest = self.server.jobs.artifacts, self.server.config.preview_max_size
        self._frame(job_id, view, event["node_id"],
                    lambda: fit_preview(artifacts.get(event["file"]), event.get("mime"),
                                        largest))  # fmt: skip

    def _image_sent(self, job_id: str, view: RunView, event: dict[str, Any]) -> None:
        """A SaveImageWebsocket image as ComfyUI sends it: a ``progress`` message, then the
        full PNG as a binary image frame."""
        node = event["node_id"]
        self._to_client(view, {"type": "progress", "data": {
            "value": event["index"], "max": event["total"], "prompt_id": job_id,
            "node": node}})  # fmt: skip
        artifacts = self.server.jobs.artifacts
        self._frame(job_id, view, node, lambda: (artifacts.get(event["file"]), "image/png"))

    def _frame(self, job_id: str, view: RunView, node_id: str,
               read: Callable[[], tuple[bytes, str]]) -> None:  # fmt: skip
        """A binary image frame in its place among the run's messages: a placeholder is
        queued now and filled once ``read`` (off the loop) has the image, so it never
        arrives after the progress or the end that followed it."""
        client = self.clients.get(view.client_id) if view.client_id else None
        if client is None or self.loop is None:
            return
        frame: asyncio.Future[bytes | None] = self.loop.create_future()
        client.offer(frame)
        metadata = bool(client.flags.get("supports_preview_metadata"))
        self._spawn(self._render(frame, job_id, node_id, read, metadata))

    async def _render(self, frame: asyncio.Future[bytes | None], job_id: str, node_id: str,
                      read: Callable[[], tuple[bytes, str]], metadata: bool) -> None:  # fmt: skip
        from starlette.concurrency import run_in_threadpool

        try:
            image, mime = await run_in_threadpool(read)
        except Exception:
            log.exception("reading job %s's image for its client failed", job_id)
            frame.set_result(None)  # the client goes on without it
            return
        frame.set_result(preview_frame(image, mime, job_id, node_id, metadata))

    async def _status(self) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        remaining = await run_in_threadpool(queue_remaining, self.server)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _broadcast_status(self) -> None:
        message = {"type": "status", "data": {"status": await self._status()}}
        for client in list(self.clients.values()):
            if not client.sid.startswith("sse-"):
                client.offer(message)


def queue_remaining(server: Server) -> int:
    from midrun.jobs.states import JobState

    active = [JobState.QUEUED, JobState.RUNNING, JobState.PAUSING]
    return server.jobs.store.count(states=active)


def fit_preview(data: bytes, mime: str | None, max_size: int) -> tuple[bytes, str]:
    """The preview image, shrunk to fit ``max_size`` square if it is larger (JPEG)."""
    import io

    from PIL import Image

    mime = mime or "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= max_size and mime in IMAGE_FORMATS:
            return data, mime
        image = image.convert("RGB")
        image.thumbnail((max_size, max_size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=95)
        return out.getvalue(), "image/jpeg"


def preview_frame(image: bytes, mime: str, job_id: str, node_id: str, metadata: bool) -> bytes:
    """ComfyUI's binary preview: type 4 (with metadata JSON) for clients that said they
    support it, else type 1 (format code + image). Integers are big-endian."""
    if metadata:
        meta = json.dumps({"node_id": node_id, "prompt_id": job_id, "display_node_id": node_id,
                           "parent_node_id": None, "real_node_id": node_id,
                           "image_type": mime}).encode("utf-8")  # fmt: skip
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image
    return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS.get(mime, 1)) + image
