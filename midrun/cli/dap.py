"""``midrun dap``: a Debug Adapter Protocol server, so VS Code (or any DAP client) debugs a
StateGraph or a workflow: breakpoints on nodes, lines of node functions and sampler steps,
conditions, hit counts and logpoints, node errors, stepping into sampler steps and
subgraphs, variables (tensors summarised), evaluate in midrun's safe expressions, and
setVariable on a held workflow node's input (a mid-run edit).

The wire is the protocol's: ``Content-Length: N`` headers, then N bytes of JSON, over
stdio (stdout carries only the protocol: anything the program prints reaches the client
as ``output`` events' stderr), or over TCP on loopback (``--port N``, one session per
connection). What is debugged is a :mod:`midrun.cli.targets` target; the adapter only
translates. A bad request gets an error response whose message names the fix; a malformed
condition is an unverified breakpoint with the reason, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from midrun.cli.targets import (
    EXCEPTION_FILTER,
    AttachTarget,
    BreakpointResult,
    BreakpointSpec,
    LaunchTarget,
    describe,
    parse_value,
    tensor_text,
)
from midrun.core.errors import MidrunError
from midrun.debug.controller import PauseContext, PauseReason
from midrun.debug.inspector import is_tensor, summarise

log = logging.getLogger("midrun.dap")
THREAD_ID = 1
MAX_CHILDREN = 1000  # variables listed under one value (DAP clients page beyond)
MAX_VALUE = 200  # characters of a value's text

CAPABILITIES: dict[str, Any] = {
    "supportsConfigurationDoneRequest": True,
    "supportsFunctionBreakpoints": True,
    "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True,
    "supportsLogPoints": True,
    "supportsEvaluateForHovers": True,
    "supportsSetVariable": True,
    "supportsTerminateRequest": True,
    "supportsExceptionFilterOptions": True,
    "exceptionBreakpointFilters": [{
        "filter": EXCEPTION_FILTER, "label": "Node errors", "default": False,
        "description": "Stop where a node raises, before the run fails",
        "supportsCondition": True,
        "conditionDescription": "exception types, comma-separated (e.g. ValueError, KeyError)",
    }],
}  # fmt: skip


class RequestError(Exception):
    """Answered as an error response with this message."""


class Adapter:
    """One debug session: DAP requests in, responses and events out through ``send``."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send
        self._seq = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.target: LaunchTarget | AttachTarget | None = None
        self.done = asyncio.Event()
        self._configured = False
        self._stop_on_entry = False
        self._first_stop = True
        self._after_edit = False
        self._ids: dict[str, int] = {}  # midrun breakpoint id -> DAP id
        self._groups: dict[str, str] = {}  # midrun breakpoint id -> its group
        self._next_id = 0
        self._refs: dict[int, tuple[Any, str | None, str | None]] = {}
        self._ended = False
        self._then: Callable[[], None] | None = None

    # -- the wire ------------------------------------------------------------------------

    def _out(self, message: dict[str, Any]) -> None:
        self._seq += 1
        self._send({"seq": self._seq, **message})

    def event(self, name: str, body: dict[str, Any] | None = None) -> None:
        self._out({"type": "event", "event": name, **({"body": body} if body else {})})

    def _respond(self, request: Mapping[str, Any], body: Any = None, *,
                 error: str | None = None) -> None:  # fmt: skip
        message: dict[str, Any] = {"type": "response", "request_seq": request.get("seq", 0),
                                   "command": request.get("command", ""),
                                   "success": error is None}  # fmt: skip
        if error is not None:
            message["message"] = error
            message["body"] = {"error": {"id": 1, "format": error, "showUser": True}}
        elif body is not None:
            message["body"] = body
        self._out(message)

    async def handle(self, request: Any) -> None:
        """Answer one message from the client (requests only; anything else is logged)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if not isinstance(request, dict) or request.get("type") != "request":
            log.warning("ignored a message that is not a request: %.200r", request)
            return
        command = request.get("command")
        handler = getattr(self, f"on_{command}", None) if isinstance(command, str) else None
        if handler is None:
            self._respond(request, error=f"midrun's adapter does not support {command!r}; "
                          "see the capabilities its initialize response lists")  # fmt: skip
            return
        args = request.get("arguments") or {}
        try:
            if not isinstance(args, dict):
                raise RequestError(f"{command}: 'arguments' must be an object")
            body = await handler(args)
        except RequestError as exc:
            self._respond(request, error=str(exc))
        except MidrunError as exc:
            self._respond(request, error=exc.message)
        except Exception as exc:  # a fault of the adapter: answered, logged, never fatal
            log.exception("DAP %s failed", command)
            self._respond(request, error=f"{command} failed: {type(exc).__name__}: {exc}")
        else:
            self._respond(request, body)
            if command in ("launch", "attach"):
                self.event("initialized")
            elif command == "disconnect":
                self.done.set()
            if self._then is not None:  # what the request starts, once it is answered
                then, self._then = self._then, None
                await asyncio.to_thread(then)

    def _need(self) -> LaunchTarget | AttachTarget:
        if self.target is None:
            raise RequestError("Nothing is being debugged yet: send launch first")
        return self.target

    def _held(self) -> tuple[LaunchTarget | AttachTarget, PauseContext]:
        target = self._need()
        context = target.context
        if context is None:
            raise RequestError("The run is not paused: pause it (or wait for a breakpoint), "
                               "then ask again")  # fmt: skip
        return target, context

    # -- session -----------------------------------------------------------------------

    async def on_initialize(self, args: dict[str, Any]) -> dict[str, Any]:
        return CAPABILITIES

    async def on_launch(self, args: dict[str, Any]) -> None:
        if self.target is not None:
            raise RequestError("This session already has a program; start another session")
        program = args.get("program")
        if not isinstance(program, str) or not program:
            raise RequestError("launch needs 'program': a Python file whose module-level "
                               "'graph' runs on 'inputs', or a workflow .json")  # fmt: skip
        inputs = args.get("inputs")
        if inputs is not None and not isinstance(inputs, dict):
            raise RequestError("launch's 'inputs' must be an object (the graph's input state)")
        base = Path(args.get("cwd") or ".")
        options = {k: args[k] for k in ("models_dir", "output_dir", "device") if args.get(k)}
        path = Path(program) if Path(program).is_absolute() else base / program
        target = await asyncio.to_thread(LaunchTarget, path, inputs=inputs, **options)
        target.listeners.append(self._from_target)
        self.target = target
        self._stop_on_entry = bool(args.get("stopOnEntry"))
        if self._configured:  # configurationDone came first
            self._then = lambda: target.start(stop_on_entry=self._stop_on_entry)

    async def on_attach(self, args: dict[str, Any]) -> None:
        if self.target is not None:
            raise RequestError("This session already debugs something; start another session")
        server, job = args.get("server"), args.get("job")
        if not isinstance(server, str) or not isinstance(job, str) or not job:
            raise RequestError("attach needs 'server' (e.g. http://127.0.0.1:8188) and 'job' "
                               "(a job id on it), and 'token' if the server asks for one")
        token = args.get("token") if isinstance(args.get("token"), str) else None
        target = await asyncio.to_thread(AttachTarget, server, job, token=token)
        target.listeners.append(self._from_target)
        self.target = target
        if self._configured:
            self._then = target.start

    async def on_configurationDone(self, args: dict[str, Any]) -> None:
        self._configured = True
        target = self.target
        if target is not None:  # started once this is answered: its events come after
            self._then = lambda: target.start(stop_on_entry=self._stop_on_entry)

    async def on_disconnect(self, args: dict[str, Any]) -> None:
        target = self.target
        if target is None:
            return
        # A launched program ends with the session; an attached job goes on unless asked.
        if args.get("terminateDebuggee", target.kind == "launch") and not self._ended:
            await asyncio.to_thread(target.terminate)
        await asyncio.to_thread(target.join, 10)

    async def on_terminate(self, args: dict[str, Any]) -> None:
        target = self._need()
        if self._ended:
            raise RequestError("The run has already ended")
        await asyncio.to_thread(target.terminate)

    # -- breakpoints -------------------------------------------------------------------

    def _breakpoints(self, group: str, specs: list[BreakpointSpec]) -> dict[str, Any]:
        target = self._need()
        results = target.replace_breakpoints(group, specs)  # (attached: a few HTTP calls)
        for bp_id in [b for b, g in self._groups.items() if g == group]:
            del self._groups[bp_id]
            self._ids.pop(bp_id, None)
        return {"breakpoints": [self._describe(group, r) for r in results]}

    def _describe(self, group: str, result: BreakpointResult) -> dict[str, Any]:
        self._next_id += 1
        out: dict[str, Any] = {"id": self._next_id, "verified": result.verified}
        if result.breakpoint is not None:
            self._ids[result.breakpoint.id] = self._next_id
            self._groups[result.breakpoint.id] = group
            if result.node_id is not None and self.target is not None:
                out["message"] = f"stops at {self.target.node_label(result.node_id)}"
        else:
            out["message"] = result.message
        if result.line is not None:
            out["line"] = result.line
        return out

    @staticmethod
    def _options(item: Mapping[str, Any], where: str) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for dap, ours in (("condition", "condition"), ("hitCondition", "hit_condition"),
                          ("logMessage", "log_message")):  # fmt: skip
            value = item.get(dap)
            if value is not None and not isinstance(value, str):
                raise RequestError(f"{where}.{dap} must be a string")
            if value:
                options[ours] = value
        return options

    async def on_setFunctionBreakpoints(self, args: dict[str, Any]) -> dict[str, Any]:
        items = args.get("breakpoints")
        if not isinstance(items, list):
            raise RequestError("setFunctionBreakpoints needs 'breakpoints': a list of "
                               "{name: a node id or name, 'NODE@STEP' for a sampler step}")
        specs = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RequestError(f"breakpoints[{i}] needs 'name' (a node id or name)")
            specs.append(BreakpointSpec(node=item["name"],
                                        **self._options(item, f"breakpoints[{i}]")))
        return self._breakpoints("function", specs)

    async def on_setBreakpoints(self, args: dict[str, Any]) -> dict[str, Any]:
        source = args.get("source")
        path = source.get("path") if isinstance(source, dict) else None
        if not isinstance(path, str) or not path:
            raise RequestError("setBreakpoints needs 'source' with a 'path'")
        items = args.get("breakpoints")
        if items is None:
            items = [{"line": line} for line in args.get("lines") or []]
        if not isinstance(items, list):
            raise RequestError("setBreakpoints' 'breakpoints' must be a list of {line}")
        specs = []
        for i, item in enumerate(items):
            line = item.get("line") if isinstance(item, dict) else None
            if not isinstance(line, int) or isinstance(line, bool) or line < 1:
                raise RequestError(f"breakpoints[{i}] needs 'line' (an integer >= 1)")
            specs.append(BreakpointSpec(line=line, path=path,
                                        **self._options(item, f"breakpoints[{i}]")))
        return self._breakpoints(f"source:{Path(path).resolve()}", specs)

    async def on_setExceptionBreakpoints(self, args: dict[str, Any]) -> dict[str, Any]:
        filters = args.get("filters") or []
        options = args.get("filterOptions") or []
        if not isinstance(filters, list) or not isinstance(options, list):
            raise RequestError("setExceptionBreakpoints takes 'filters' (a list of filter "
                               f"ids: {EXCEPTION_FILTER!r}) and 'filterOptions'")  # fmt: skip
        chosen = [{"filterId": f} for f in filters] + [o for o in options if isinstance(o, dict)]
        specs = []
        for option in chosen:
            if option.get("filterId") != EXCEPTION_FILTER:
                raise RequestError(f"Unknown exception filter {option.get('filterId')!r}; "
                                   f"the one filter is {EXCEPTION_FILTER!r}")  # fmt: skip
            condition = option.get("condition") or ""
            kinds = tuple(k.strip() for k in str(condition).split(",") if k.strip())
            specs.append(BreakpointSpec(errors=True, exception_types=kinds))
        return self._breakpoints("exception", specs)

    # -- where it stopped --------------------------------------------------------------

    async def on_threads(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self.target.program.name if self.target else "midrun"
        return {"threads": [{"id": THREAD_ID, "name": f"run of {name}"}]}

    async def on_stackTrace(self, args: dict[str, Any]) -> dict[str, Any]:
        target = self._need()
        frames = []
        for i, frame in enumerate(target.frames()):
            out: dict[str, Any] = {"id": i + 1, "name": frame.name, "line": frame.line or 0,
                                   "column": 1 if frame.line else 0}  # fmt: skip
            if frame.path:
                out["source"] = {"name": Path(frame.path).name, "path": frame.path}
            frames.append(out)
        start = int(args.get("startFrame") or 0)
        levels = int(args.get("levels") or 0)
        shown = frames[start:start + levels] if levels else frames[start:]
        return {"stackFrames": shown, "totalFrames": len(frames)}

    async def on_scopes(self, args: dict[str, Any]) -> dict[str, Any]:
        target, context = self._held()
        scopes = []
        for name, value in target.scopes():
            ref = self._ref(value, name, context.node_id)
            scopes.append({"name": name, "variablesReference": ref, "expensive": False,
                           "presentationHint": "locals" if name in ("Inputs", "State")
                           else None})  # fmt: skip
        return {"scopes": scopes}

    def _ref(self, value: Any, scope: str | None = None, node_id: str | None = None) -> int:
        """A reference for a value with children (0 for one without)."""
        if not (isinstance(value, (Mapping, list, tuple)) or is_tensor(value)):
            return 0
        ref = len(self._refs) + 1
        self._refs[ref] = (value, scope, node_id)
        return ref

    def _variable(self, name: str, value: Any) -> dict[str, Any]:
        return {"name": name, "value": text_of(value), "type": type(value).__name__,
                "variablesReference": self._ref(value)}  # fmt: skip

    async def on_variables(self, args: dict[str, Any]) -> dict[str, Any]:
        self._held()
        ref = args.get("variablesReference")
        if ref not in self._refs:
            raise RequestError(f"No variables under reference {ref!r} (references last only "
                               "while the run stays stopped)")  # fmt: skip
        value = self._refs[ref][0]
        if is_tensor(value):
            items: list[tuple[str, Any]] = list(summarise(value).items())
        elif isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        else:
            items = [(str(i), v) for i, v in enumerate(value)]
        start = int(args.get("start") or 0)
        count = int(args.get("count") or MAX_CHILDREN)
        return {"variables": [self._variable(k, v) for k, v in items[start:start + count]]}

    async def on_evaluate(self, args: dict[str, Any]) -> dict[str, Any]:
        text = args.get("expression")
        if not isinstance(text, str) or not text.strip():
            raise RequestError("evaluate needs 'expression' (midrun's safe expressions, e.g. "
                               "'inputs.cfg * 2' or 'len(state.items)')")  # fmt: skip
        target, _ = self._held()
        value = target.evaluate(text)
        return {"result": text_of(value), "type": type(value).__name__,
                "variablesReference": self._ref(value)}  # fmt: skip

    async def on_setVariable(self, args: dict[str, Any]) -> dict[str, Any]:
        target, _ = self._held()
        ref, name, text = args.get("variablesReference"), args.get("name"), args.get("value")
        if ref not in self._refs or not isinstance(name, str) or not isinstance(text, str):
            raise RequestError("setVariable needs 'variablesReference' (of the Inputs scope), "
                               "'name' (an input) and 'value' (JSON or text)")  # fmt: skip
        _, scope, node_id = self._refs[ref]
        if scope != "Inputs" or node_id is None:
            raise RequestError("Only a held workflow node's inputs are set (the Inputs scope); "
                               "the change is a mid-run edit from the next step")  # fmt: skip
        value = parse_value(text)
        self._after_edit = True
        try:
            await target.set_input(node_id, name, value)
        except BaseException:
            self._after_edit = False
            raise
        return {"value": text_of(value), "type": type(value).__name__, "variablesReference": 0}

    # -- commands ----------------------------------------------------------------------

    async def _command(self, name: str) -> dict[str, Any]:
        target, _ = self._held()
        self._refs.clear()
        # In this task, not a thread: the response goes out before any event the command
        # causes (an attached job's command is one loopback HTTP call).
        target.command(name)
        return {"allThreadsContinued": True}

    async def on_continue(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._command("continue")

    async def on_next(self, args: dict[str, Any]) -> None:
        await self._command("step_over")

    async def on_stepIn(self, args: dict[str, Any]) -> None:
        await self._command("step_into")

    async def on_stepOut(self, args: dict[str, Any]) -> None:
        await self._command("step_out")

    async def on_pause(self, args: dict[str, Any]) -> None:
        target = self._need()
        if self._ended:
            raise RequestError("The run has already ended")
        target.pause()

    # -- the target's events (on the run's thread: handed to the adapter's loop) ----------

    def _from_target(self, event: str, data: dict[str, Any]) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._on_target, event, dict(data))

    def _on_target(self, event: str, data: dict[str, Any]) -> None:
        if event == "paused":
            self._stopped()
        elif event == "output":
            self.event("output", {"category": "console", "output": f"{data.get('message')}\n",
                                  "data": {"node": data.get("node_id"),
                                           "step": data.get("step")}})  # fmt: skip
        elif event == "breakpoint":
            dap_id = self._ids.get(str(data.get("breakpoint_id")))
            if dap_id is not None:
                self.event("breakpoint", {"reason": "changed", "breakpoint": {
                    "id": dap_id, "verified": False, "message": data.get("reason")}})  # fmt: skip
        elif event == "continued":  # resumed by someone else (an attached job)
            self._refs.clear()
            self.event("continued", {"threadId": THREAD_ID, "allThreadsContinued": True})
        elif event == "completed":
            self._finished(data)

    def _stopped(self) -> None:
        target = self.target
        context = target.context if target is not None else None
        if context is None:
            return
        self._refs.clear()
        reason = {PauseReason.BREAKPOINT: "breakpoint", PauseReason.STEP: "step",
                  PauseReason.EXCEPTION: "exception", PauseReason.RUN_TO: "goto",
                  PauseReason.PAUSE_REQUEST: "pause"}.get(context.reason, "pause")  # fmt: skip
        if context.error is not None:  # held where a node raised (node errors filter)
            reason = "exception"
        hits = [self._ids[b] for b in context.breakpoint_ids
                if b in self._ids and self._groups.get(b) != "exception"]  # fmt: skip
        if reason == "breakpoint" and hits and all(
                self._groups.get(b) == "function" for b in context.breakpoint_ids):  # fmt: skip
            reason = "function breakpoint"
        if self._first_stop and self._stop_on_entry and reason == "pause":
            reason = "entry"
        if self._after_edit:
            reason, self._after_edit = "step", False
        self._first_stop = False
        body: dict[str, Any] = {"reason": reason, "threadId": THREAD_ID,
                                "allThreadsStopped": True, "description": describe(context),
                                "hitBreakpointIds": hits}  # fmt: skip
        if context.error:
            body["text"] = context.error
        self.event("stopped", body)

    def _finished(self, data: dict[str, Any]) -> None:
        if self._ended:
            return
        self._ended = True
        status = str(data.get("status", "completed"))
        line = f"run {status}"
        error = data.get("error")
        if isinstance(error, Mapping):
            error = error.get("message") or error
        if error:
            line += f": {error}"
        elif data.get("reason"):
            line += f": {data['reason']}"
        self.event("output", {"category": "console", "output": line + "\n"})
        self.event("exited", {"exitCode": 0 if status == "completed" else 1})
        self.event("terminated")


def text_of(value: Any) -> str:
    """How a value reads in a variables view: tensors by shape and numbers, containers by
    size, anything else by ``repr`` (cut short)."""
    if is_tensor(value):
        return tensor_text(value)
    if isinstance(value, Mapping):
        return f"{{{len(value)} keys}}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"


# -- transports ----------------------------------------------------------------------------


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at the end of the stream. A malformed one raises."""
    length = None
    while True:
        line = await reader.readline()
        if not line:
            return None
        text = line.decode("ascii", "replace").strip()
        if not text:
            if length is None:
                continue  # stray blank line between messages
            break
        name, _, value = text.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length)
    return json.loads(body.decode("utf-8"))


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, default=str).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


async def serve(reader: asyncio.StreamReader, write: Callable[[bytes], None]) -> None:
    """One session: read requests until disconnect or the end of the stream."""
    adapter = Adapter(lambda message: write(encode(message)))
    adapter.loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    while not adapter.done.is_set():
        reading = asyncio.ensure_future(read_message(reader))
        finished = asyncio.ensure_future(adapter.done.wait())
        await asyncio.wait({reading, finished}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            reading.cancel()
            break
        finished.cancel()
        try:
            message = reading.result()
        except (ValueError, asyncio.IncompleteReadError) as exc:
            log.error("DAP: malformed message (%s); closing the session", exc)
            break
        if message is None:
            break
        # Each request runs on its own so a slow one (setVariable) does not hold the rest.
        task = asyncio.ensure_future(adapter.handle(message))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if adapter.target is not None and adapter.target.kind == "launch" and not adapter._ended:
        adapter.target.terminate()  # a launched program ends with its session
    for task in list(pending):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def serve_stdio() -> None:
    """DAP over stdin/stdout. stdout is kept for the protocol: file descriptor 1 (and
    ``sys.stdout``) go to stderr, so a program's prints cannot corrupt it."""
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await serve(reader, protocol.write)


async def serve_tcp(port: int, host: str = "127.0.0.1", *, once: bool = False) -> None:
    """DAP over TCP on loopback: one session per connection, one at a time."""
    sessions = asyncio.Lock()
    stop = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with sessions:
            try:
                await serve(reader, writer.write)
            finally:
                writer.close()
                if once:
                    stop.set()

    server = await asyncio.start_server(session, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"midrun dap listening on {host}:{bound}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main(port: int | None = None, *, once: bool = False) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if port is None:
        asyncio.run(serve_stdio())
    else:
        asyncio.run(serve_tcp(port, once=once))
    return 0
