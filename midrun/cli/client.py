"""How the command line reaches jobs: one :class:`Client` interface, two transports.

* :class:`HttpClient` talks to a running server (``--server URL``, ``--token``) over its
  HTTP API, and follows a job over its WebSocket.
* :class:`EmbeddedClient` works on the data directory's database directly, through the job
  layer (the same calls the server's routes make; it never imports :mod:`midrun.server`).
  A server sharing that database sees the changes: its running jobs read their row at
  every poll, and its event relay publishes the audit log to its clients.

Both answer with the same JSON shapes (the server's) and raise :class:`ClientError` with
the server's message, so each command is written once.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from midrun.jobs.service import Jobs

ACTOR = "local"  # who the audit log names for embedded calls (the local admin)


class ClientError(Exception):
    """What went wrong, as the server said it; ``state`` is the job's state on a 409."""

    def __init__(self, message: str, *, status: int | None = None, type_: str | None = None,
                 state: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.state = state

    def __str__(self) -> str:
        if self.state and self.state not in self.message:
            return f"{self.message} (the job is {self.state})"
        return self.message


@dataclass(frozen=True, slots=True)
class Preview:
    data: bytes
    mime: str
    step: int | None


@dataclass(frozen=True, slots=True)
class Edit:
    """``node_id.input = value``, as the command line writes it."""

    node_id: str
    input: str
    value: Any

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "input": self.input, "value": self.value}


class Client(ABC):
    """Everything the client commands do, whichever way they reach the jobs."""

    @abstractmethod
    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        """Newest first: ``{id, state, number, owner, batch_id, progress, paused_by}``."""

    @abstractmethod
    def job_state(self, job_id: str) -> dict[str, Any]:
        """Where the job stands (``GET /api/jobs/{id}/state``)."""

    @abstractmethod
    def pause(self, job_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def resume(self, job_id: str, front: bool | None) -> dict[str, Any]: ...

    @abstractmethod
    def abort(self, job_id: str, reason: str) -> dict[str, Any]: ...

    @abstractmethod
    def edit(self, job_id: str, edits: list[Edit]) -> dict[str, Any]: ...

    @abstractmethod
    def undo(self, job_id: str, edit_id: int | None) -> dict[str, Any]: ...

    @abstractmethod
    def preview(self, job_id: str, step: int | None) -> Preview: ...

    @abstractmethod
    def breakpoints(self, *, job_id: str | None = None,
                    workflow_id: str | None = None) -> list[dict[str, Any]]: ...  # fmt: skip

    @abstractmethod
    def add_breakpoint(self, spec: dict[str, Any], *, job_id: str | None = None,
                       workflow_id: str | None = None) -> dict[str, Any]: ...  # fmt: skip

    @abstractmethod
    def remove_breakpoint(self, bp_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def enable_breakpoint(self, bp_id: str, enabled: bool) -> dict[str, Any]: ...

    @abstractmethod
    def pipeline(self, action: str | None = None) -> dict[str, Any]:
        """The pipeline's status after ``action`` (``pause``, ``resume`` or None)."""

    @abstractmethod
    def save_workflow(self, name: str, workflow: dict[str, Any]) -> dict[str, Any]: ...

    @abstractmethod
    def parameters(self, workflow_id: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    def batch(self, workflow_id: str, count: int | None,
              variations: list[dict[str, Any]]) -> dict[str, Any]: ...  # fmt: skip

    def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summary(job_id: str, state: str, progress: dict[str, Any] | None, **rest: Any
            ) -> dict[str, Any]:  # fmt: skip
    return {"id": job_id, "state": state, "progress": progress or {}, **rest}


# -- over HTTP ---------------------------------------------------------------------------


class HttpClient(Client):
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response, or :class:`ClientError` with the server's message."""
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the server at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise http_error(response)
        return response

    def json(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        kwargs: dict[str, Any] = {"params": query}
        if body is not None:
            kwargs["json"] = body
        return self.request(method, path, **kwargs).json()

    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        page = self.json("GET", "/api/jobs", limit=limit, sort_order="desc")
        out = []
        for job in page["jobs"]:
            extra = job.get("midrun") or {}
            out.append(summary(job["id"], extra.get("state", job["status"]),
                               extra.get("progress"), number=job.get("priority"),
                               owner=extra.get("owner"), batch_id=extra.get("batch_id"),
                               paused_by=extra.get("paused_by")))  # fmt: skip
        return out

    def job_state(self, job_id: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/api/jobs/{job_id}/state"))

    def pause(self, job_id: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/api/jobs/{job_id}/pause"))

    def resume(self, job_id: str, front: bool | None) -> dict[str, Any]:
        body = {"front": front} if front is not None else {}
        return dict(self.json("POST", f"/api/jobs/{job_id}/resume", body))

    def abort(self, job_id: str, reason: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/api/jobs/{job_id}/abort", {"reason": reason}))

    def edit(self, job_id: str, edits: list[Edit]) -> dict[str, Any]:
        body = {"edits": [e.to_json() for e in edits]}
        return dict(self.json("PUT", f"/api/jobs/{job_id}/params", body))

    def undo(self, job_id: str, edit_id: int | None) -> dict[str, Any]:
        path = f"/api/jobs/{job_id}/params" + (f"/{edit_id}" if edit_id is not None else "")
        return dict(self.json("DELETE", path))

    def preview(self, job_id: str, step: int | None) -> Preview:
        params = {"step": step} if step is not None else {}
        response = self.request("GET", f"/api/jobs/{job_id}/preview", params=params,
                                headers={"Accept": "image/*"})  # fmt: skip
        shown = response.headers.get("x-midrun-step")
        return Preview(response.content, response.headers.get("content-type", ""),
                       int(shown) if shown and shown.isdigit() else step)  # fmt: skip

    def breakpoints(self, *, job_id: str | None = None,
                    workflow_id: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        return list(self.json("GET", _scope(job_id, workflow_id) + "/breakpoints"))

    def add_breakpoint(self, spec: dict[str, Any], *, job_id: str | None = None,
                       workflow_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        return dict(self.json("POST", _scope(job_id, workflow_id) + "/breakpoints", spec))

    def remove_breakpoint(self, bp_id: str) -> dict[str, Any]:
        return dict(self.json("DELETE", f"/api/breakpoints/{bp_id}"))

    def enable_breakpoint(self, bp_id: str, enabled: bool) -> dict[str, Any]:
        return dict(self.json("PATCH", f"/api/breakpoints/{bp_id}", {"enabled": enabled}))

    def pipeline(self, action: str | None = None) -> dict[str, Any]:
        if action is None:
            return dict(self.json("GET", "/api/pipeline"))
        return dict(self.json("POST", f"/api/pipeline/{action}"))

    def save_workflow(self, name: str, workflow: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", "/api/workflows", {"name": name, "workflow": workflow}))

    def parameters(self, workflow_id: str) -> list[dict[str, Any]]:
        return list(self.json("GET", f"/api/workflows/{workflow_id}/parameters"))

    def batch(self, workflow_id: str, count: int | None,
              variations: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {"variations": variations}
        if count is not None:
            body["count"] = count
        return dict(self.json("POST", f"/api/workflows/{workflow_id}/batch", body))

    # -- running a workflow (HTTP only) ----------------------------------------------

    def submit(self, workflow: dict[str, Any], client_id: str) -> str:
        """POST /prompt; the job's id."""
        body = {"prompt": workflow, "client_id": client_id}
        return str(self.json("POST", "/prompt", body)["prompt_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/api/jobs/{job_id}"))

    def events(self, client_id: str) -> EventStream:
        return EventStream(self.url, client_id, self.token)


def _scope(job_id: str | None, workflow_id: str | None) -> str:
    if (job_id is None) == (workflow_id is None):
        raise ClientError("name exactly one of a job (--job) or a workflow (--workflow)")
    return f"/api/jobs/{job_id}" if job_id is not None else f"/api/workflows/{workflow_id}"


def http_error(response: httpx.Response) -> ClientError:
    """The server's JSON error (``{"error": {"type", "message"}}``, or ComfyUI's shapes)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip() or response.reason_phrase
        return ClientError(f"HTTP {response.status_code}: {text[:300]}",
                           status=response.status_code)  # fmt: skip
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return ClientError(error, status=response.status_code)
    if not isinstance(error, dict):
        return ClientError(f"HTTP {response.status_code}: {json.dumps(body)[:300]}",
                           status=response.status_code)  # fmt: skip
    message = error.get("message") or error.get("type") or f"HTTP {response.status_code}"
    details = node_error_lines(body.get("node_errors"))
    if details:
        message = "; ".join([message, *details])
    return ClientError(message, status=response.status_code, type_=error.get("type"),
                       state=error.get("state") if response.status_code == 409 else None)


def node_error_lines(node_errors: Any) -> list[str]:
    """ComfyUI's ``node_errors`` as ``node 3 (KSampler): message`` lines."""
    lines = []
    for node_id, entry in (node_errors or {}).items():
        for error in entry.get("errors") or []:
            text = error.get("details") or error.get("message", "")
            lines.append(f"node {node_id} ({entry.get('class_type', '?')}): {text}")
    return lines


class EventStream:
    """The server's WebSocket (``/ws?clientId=``) read by a background thread, so that a
    slow reader (a terminal waiting for an answer) never makes the server drop it. Binary
    preview frames are skipped; text messages arrive as dicts."""

    def __init__(self, url: str, client_id: str, token: str | None) -> None:
        from websockets.sync.client import connect

        ws_url = url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._exit = contextlib.ExitStack()
        try:
            self.ws = self._exit.enter_context(connect(ws_url, additional_headers=headers,
                                                       max_size=None, open_timeout=30))  # fmt: skip
        except Exception as exc:  # refused, 401 (closed with 4401), timed out ...
            raise ClientError(f"cannot open the server's WebSocket {ws_url}: {exc}") from exc
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, name="midrun-ws", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for frame in self.ws:
                if isinstance(frame, str):
                    self.messages.put(json.loads(frame))
        except Exception:  # closed or broken: the reader below hears None
            pass
        finally:
            self.messages.put(None)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message; ``{}`` if none came within ``timeout``; None once closed."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return {}

    def close(self) -> None:
        self._exit.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (message := self.next(1.0)) is not None:
            if message:
                yield message


# -- on the data directory ---------------------------------------------------------------


class DataPlaces(Protocol):
    """Where a server keeps its data (:class:`midrun.server.config.ServerConfig` says)."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def database_url(self) -> str | None: ...
    @property
    def models_dir(self) -> Path | None: ...
    @property
    def upload_dir(self) -> Path: ...
    @property
    def output_dir(self) -> Path: ...


class EmbeddedClient(Client):
    """The job service on the local database: no server needed, none disturbed."""

    def __init__(self, config: DataPlaces) -> None:
        from midrun.jobs.service import Jobs
        from midrun.nodes import builtin_registry
        from midrun.store.database import Database

        config.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database.open(config.database_url, data_dir=config.data_dir)
        registry = builtin_registry(config.models_dir or config.data_dir / "models",
                                    config.upload_dir)  # fmt: skip
        self.service: Jobs = Jobs(db, registry, data_dir=config.data_dir,
                                  output_dir=config.output_dir)  # fmt: skip

    def close(self) -> None:
        self.service.db.dispose()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with the job system's errors as :class:`ClientError`."""
        from midrun.core.errors import MidrunError

        try:
            return fn(*args, **kwargs)
        except MidrunError as exc:
            state = exc.extra_info.get("state")
            message = "; ".join([exc.message, *node_error_lines(exc.extra_info.get("node_errors"))])
            raise ClientError(message, type_=exc.type,
                              state=str(state) if state is not None else None) from exc

    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        found = self.call(self.service.list, limit=limit, newest_first=True)
        return [summary(j.id, j.state.value, j.progress, number=j.number, owner=j.owner,
                        batch_id=j.batch_id, paused_by=j.paused_by) for j in found]  # fmt: skip

    def job_state(self, job_id: str) -> dict[str, Any]:
        from midrun.jobs import views

        return dict(self.call(views.job_state, self.service, job_id))

    def pause(self, job_id: str) -> dict[str, Any]:
        return dict(self.call(self.service.pause, job_id, actor=ACTOR).to_dict())

    def resume(self, job_id: str, front: bool | None) -> dict[str, Any]:
        return dict(self.call(self.service.resume, job_id, actor=ACTOR, front=front).to_dict())

    def abort(self, job_id: str, reason: str) -> dict[str, Any]:
        return dict(self.call(self.service.abort, job_id, reason, actor=ACTOR).to_dict())

    def edit(self, job_id: str, edits: list[Edit]) -> dict[str, Any]:
        from midrun.jobs.edits import make_edits

        triples = [(e.node_id, e.input, e.value) for e in edits]
        return dict(self.call(make_edits, self.service, job_id, triples, ACTOR))

    def undo(self, job_id: str, edit_id: int | None) -> dict[str, Any]:
        from midrun.jobs.edits import undo_edits

        return dict(self.call(undo_edits, self.service, job_id, edit_id, ACTOR))

    def preview(self, job_id: str, step: int | None) -> Preview:
        from midrun.jobs import views

        index = self.call(views.previews, self.service, job_id)
        chosen = [e for e in index if step is None or e.get("step") == step]
        if not chosen:
            have = sorted({e["step"] for e in index if e.get("step") is not None})
            at = f" at step {step}" if step is not None else ""
            raise ClientError(f"Job {job_id} has no preview{at}"
                              + (f"; steps with previews: {have}" if have else ""))  # fmt: skip
        entry = chosen[-1]
        try:
            data = self.service.artifacts.get(entry["file"])
        except (FileNotFoundError, KeyError) as exc:
            raise ClientError(f"The preview of step {entry.get('step')} was not kept") from exc
        return Preview(data, entry.get("mime") or "", entry.get("step"))

    def breakpoints(self, *, job_id: str | None = None,
                    workflow_id: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        from midrun.jobs import breakpoints as bps
        from midrun.jobs import views

        _scope(job_id, workflow_id)
        if job_id is not None:
            job = self.call(self.service.get, job_id)
            return list(self.call(views.applying_breakpoints, self.service, job))
        return list(self.call(bps.list_breakpoints, self.service, workflow_id=workflow_id))

    def add_breakpoint(self, spec: dict[str, Any], *, job_id: str | None = None,
                       workflow_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        from midrun.jobs import breakpoints as bps

        _scope(job_id, workflow_id)
        return dict(self.call(bps.create, self.service, spec, job_id=job_id,
                              workflow_id=workflow_id, actor=ACTOR))  # fmt: skip

    def remove_breakpoint(self, bp_id: str) -> dict[str, Any]:
        from midrun.jobs import breakpoints as bps

        return dict(self.call(bps.remove, self.service, bp_id, actor=ACTOR))

    def enable_breakpoint(self, bp_id: str, enabled: bool) -> dict[str, Any]:
        from midrun.jobs import breakpoints as bps

        return dict(self.call(bps.set_enabled, self.service, bp_id, enabled, actor=ACTOR))

    def pipeline(self, action: str | None = None) -> dict[str, Any]:
        from midrun.jobs import pipeline

        if action == "pause":
            return dict(self.call(pipeline.pause_pipeline, self.service, actor=ACTOR))
        if action == "resume":
            return dict(self.call(pipeline.resume_pipeline, self.service, actor=ACTOR))
        return dict(self.call(pipeline.status, self.service))

    def save_workflow(self, name: str, workflow: dict[str, Any]) -> dict[str, Any]:
        from midrun.jobs import workflows

        return dict(self.call(workflows.save_workflow, self.service, name, workflow,
                              owner=ACTOR))  # fmt: skip

    def parameters(self, workflow_id: str) -> list[dict[str, Any]]:
        from midrun.jobs import workflows

        return list(self.call(workflows.workflow_parameters, self.service, workflow_id))

    def batch(self, workflow_id: str, count: int | None,
              variations: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        from midrun.jobs import workflows

        saved = self.call(workflows.get_workflow, self.service, workflow_id)
        return dict(self.call(workflows.submit_workflow_batch, self.service, saved,
                              count=count, variations=variations, owner=ACTOR))  # fmt: skip


def connect(server: str | None, token: str | None, config: DataPlaces) -> Client:
    """An HTTP client when a server URL is given, else the embedded one on ``config``'s
    data directory and database."""
    if server:
        return HttpClient(server, token)
    return EmbeddedClient(config)
