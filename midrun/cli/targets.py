"""What a debugger front end debugs: a target. The Debug Adapter Protocol server
(:mod:`midrun.cli.dap`) drives one; so can a terminal debugger. Both see the same stops,
breakpoints, frames, values and commands.

:class:`LaunchTarget` runs a program in this process under a
:class:`~midrun.debug.session.DebugSession`: a Python file whose module-level ``graph`` (a
StateGraph, built or compiled) runs on its module-level ``inputs`` dict, or a workflow
``.json`` run embedded (ComfyUI's core nodes on the diffusion runtime when it uses them).
The run has its own thread and event loop, so the front end answers while a node runs.

Breakpoints come in groups that a front end replaces whole (DAP sets all function
breakpoints, all of one source's lines, all exception filters at once): a
:class:`BreakpointSpec` names a node (its id, its name, a workflow node's title or class
when that is unique; ``NODE@STEP`` for a sampler step), or a line of a node function's
source (the node stops before it runs), or node errors. Each comes back verified or not,
with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import runpy
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midrun.core.errors import MidrunError
from midrun.debug.breakpoints import Breakpoint, BreakpointPosition, BreakpointType
from midrun.debug.controller import PauseContext, PauseReason
from midrun.debug.expressions import Expression
from midrun.debug.session import DebugSession, DebugSessionConfig

Listener = Callable[[str, dict[str, Any]], None]
EXCEPTION_FILTER = "node_errors"


class TargetError(MidrunError):
    """A request the target cannot do as asked; the message says how to ask."""

    type = "debug_target_error"


@dataclass(slots=True)
class BreakpointSpec:
    """One breakpoint as a front end asks for it."""

    node: str | None = None  # a node (``NODE`` or ``NODE@STEP``)
    line: int | None = None  # or a line of ``path``
    path: str | None = None
    errors: bool = False  # or node errors (``exception_types``: which, empty = any)
    exception_types: tuple[str, ...] = ()
    condition: str | None = None
    hit_condition: str | None = None
    log_message: str | None = None


@dataclass(slots=True)
class BreakpointResult:
    """What became of a :class:`BreakpointSpec`: the breakpoint, or why there is none."""

    spec: BreakpointSpec
    breakpoint: Breakpoint | None = None
    message: str = ""
    node_id: str | None = None
    line: int | None = None

    @property
    def verified(self) -> bool:
        return self.breakpoint is not None


@dataclass(slots=True)
class Frame:
    """A level of where the run stopped: the node, then the subgraphs it is inside."""

    name: str
    node_id: str
    path: str | None = None
    line: int | None = None


def describe(context: PauseContext) -> str:
    """Where a run stopped: ``node 3 (KSampler) step 12/30`` (after that sampler step),
    ``node 9 (SaveImage), before`` (or ``after``, ``on_error``)."""
    where = f"node {context.node_id}"
    if context.class_type and context.class_type != context.node_id:
        where += f" ({context.class_type})"
    stepping = context.position == BreakpointPosition.STEP or context.total_steps is not None
    if context.step is not None and stepping:  # (a plain node's error point says step 0)
        total = f"/{context.total_steps}" if context.total_steps is not None else ""
        where += f" step {context.step}{total}"
    if context.position != BreakpointPosition.STEP:
        where += f", {context.position.value}"
    return where


def names_at(context: PauseContext) -> dict[str, Any]:
    """The names an expression may use where the run is held, as a condition there
    would: the state's keys (a StateGraph) or the node's inputs (a workflow), plus
    ``state``, ``inputs``, ``outputs``, ``step_state``, ``node``, ``step``,
    ``total_steps``, ``position``, ``error``."""
    state = context.state
    if context.kind == "stategraph":
        names: dict[str, Any] = dict(state)
        inputs: Any = state
    else:
        inputs = state.get("inputs", {})
        names = dict(inputs) if isinstance(inputs, Mapping) else {}
    names.update(state=state, inputs=inputs, outputs=state.get("outputs"),
                 step_state=state.get("step_state"), node=context.node_id,
                 class_type=context.class_type, position=context.position.value,
                 step=context.step, total_steps=context.total_steps,
                 error=context.error)  # fmt: skip
    return names


class LaunchTarget:
    """A program run in this process under the debugger."""

    kind = "launch"

    def __init__(self, program: str | Path, *, inputs: Mapping[str, Any] | None = None,
                 models_dir: str | Path | None = None, output_dir: str | Path = "output",
                 device: str = "auto", record_history: bool = False) -> None:  # fmt: skip
        self.program = Path(program).resolve()
        if not self.program.is_file():
            raise TargetError(f"No program at {self.program}: give a Python file with a "
                              "module-level 'graph', or a workflow .json")  # fmt: skip
        self.listeners: list[Listener] = []
        self._models_dir, self._output_dir, self._device = models_dir, output_dir, device
        self._groups: dict[str, list[Breakpoint]] = {}
        self._thread: threading.Thread | None = None
        self._edit: tuple[str, str, Any, str] | None = None
        self._edit_error: MidrunError | None = None
        self._edited: asyncio.Future[Any] | None = None
        self._edited_loop: asyncio.AbstractEventLoop | None = None
        self.result: Any = None
        self.functions: dict[str, tuple[str, int, int]] = {}  # node -> (file, first, last)
        self.node_lines: dict[str, int] = {}  # a workflow node -> its line in the .json
        if self.program.suffix == ".py":
            self._load_graph(inputs)
        elif self.program.suffix == ".json":
            self._load_workflow()
        else:
            raise TargetError(f"{self.program.name}: the program is a Python file (.py) or a "
                              "workflow (.json)")  # fmt: skip
        # record_history: a snapshot at every point (what `diff` compares)
        self.session = DebugSession(DebugSessionConfig(record_history=record_history),
                                    graph=self._graph)  # fmt: skip
        self.session.controller.listeners.append(self._relay)

    # -- loading ---------------------------------------------------------------------

    def _load_graph(self, inputs: Mapping[str, Any] | None) -> None:
        from midrun.engine.stategraph import CompiledStateGraph
        from midrun.graph.stategraph import StateGraph

        try:
            module = runpy.run_path(str(self.program), run_name="__midrun_debug__")
        except Exception as exc:  # the user's program, as it fails
            raise TargetError(f"{self.program.name} failed to load: {type(exc).__name__}: "
                              f"{exc}") from exc  # fmt: skip
        graph = module.get("graph")
        if isinstance(graph, StateGraph):
            graph = graph.compile()
        if not isinstance(graph, CompiledStateGraph):
            raise TargetError(f"{self.program.name} defines no module-level 'graph' (a "
                              "StateGraph, built or compiled)")  # fmt: skip
        given = module.get("inputs", {}) if inputs is None else inputs
        if not isinstance(given, Mapping):
            raise TargetError(f"{self.program.name}: 'inputs' must be a dict, not "
                              f"{type(given).__name__}")  # fmt: skip
        self.kind_of_run, self._graph, self.inputs = "stategraph", graph, dict(given)
        for name, fn in graph.graph.nodes.items():
            target = getattr(fn, "step", fn)
            with contextlib.suppress(TypeError, OSError):
                lines, first = inspect.getsourcelines(inspect.unwrap(target))
                source = inspect.getsourcefile(target)
                if source:
                    owner = fn if not hasattr(fn, "step") else type(fn)
                    with contextlib.suppress(TypeError, OSError):
                        lines, first = inspect.getsourcelines(owner)
                    self.functions[name] = (str(Path(source).resolve()), first,
                                            first + len(lines) - 1)  # fmt: skip

    def _load_workflow(self) -> None:
        from midrun.graph.loading import read_workflow_file
        from midrun.nodes import builtin_registry
        from midrun.nodes.runtime import with_runtime

        registry = builtin_registry(models_dir=self._models_dir)
        workflow = read_workflow_file(self.program, registry)
        types = {spec.class_type for spec in workflow.nodes.values()}
        self.registry = with_runtime(registry, types, self._models_dir, device=self._device,
                                     output_dir=self._output_dir)
        self.kind_of_run, self._graph, self.workflow = "workflow", workflow, workflow
        self._current = workflow.to_api()  # with the edits made while debugging
        text = self.program.read_text(encoding="utf-8")
        for node_id in workflow.nodes:
            match = re.search(rf'"{re.escape(str(node_id))}"\s*:\s*\{{', text)
            if match:
                self.node_lines[str(node_id)] = text.count("\n", 0, match.start()) + 1

    @property
    def nodes(self) -> list[str]:
        return [str(n) for n in (self._graph.graph.nodes if self.kind_of_run == "stategraph"
                                 else self._graph.nodes)]  # fmt: skip

    def node_label(self, node_id: str) -> str:
        """How a breakpoint names its node: ``node 3 (KSampler)``, or a StateGraph's
        ``node review``."""
        spec = self._graph.nodes.get(node_id) if self.kind_of_run == "workflow" else None
        return f"node {node_id} ({spec.class_type})" if spec is not None else f"node {node_id}"

    # -- breakpoints -------------------------------------------------------------------

    def resolve_node(self, name: str) -> str:
        """A node id from what a person would call it (see :func:`find_node`)."""
        if self.kind_of_run == "workflow":
            named = {str(nid): (spec.class_type, spec.title)
                     for nid, spec in self._graph.nodes.items()}  # fmt: skip
        else:
            named = dict.fromkeys(self.nodes, (None, None))
        return find_node(name, named, self.program.name)

    def node_at_line(self, path: str, line: int) -> str:
        """The node whose function (a StateGraph) or JSON object (a workflow) holds the
        line: a breakpoint there stops before that node runs."""
        where = str(Path(path).resolve())
        if self.kind_of_run == "stategraph":
            for name, (source, first, last) in self.functions.items():
                if source == where and first <= line <= last:
                    return name
            inside = [f"{n} (lines {a}-{b})" for n, (s, a, b) in self.functions.items()
                      if s == where]  # fmt: skip
            raise TargetError(f"Line {line} of {Path(path).name} is inside no node function "
                              f"of the graph" + (f"; node functions here: {', '.join(inside)}"
                                                 if inside else ""))  # fmt: skip
        if where == str(self.program):
            starts = sorted((first, nid) for nid, first in self.node_lines.items())
            chosen = [nid for first, nid in starts if first <= line]
            if chosen:
                return chosen[-1]
        raise TargetError(f"Line {line} of {Path(path).name} is inside no node of the workflow")

    def replace_breakpoints(self, group: str, specs: Iterable[BreakpointSpec]
                            ) -> list[BreakpointResult]:  # fmt: skip
        """Hold ``specs`` as the whole of ``group`` (the ones it held before go)."""
        for old in self._groups.pop(group, []):
            with contextlib.suppress(MidrunError):
                self.session.clear_breakpoint(old.id)
        results, held = [], []
        for spec in specs:
            result = self._make(spec)
            if result.breakpoint is not None:
                held.append(self.session.breakpoints.add(result.breakpoint))
            results.append(result)
        self._groups[group] = held
        return results

    def _make(self, spec: BreakpointSpec) -> BreakpointResult:
        result = BreakpointResult(spec, line=spec.line)
        try:
            step = None
            if spec.errors:
                bp = Breakpoint.create(bp_type=BreakpointType.EXCEPTION,
                                       position=BreakpointPosition.ON_ERROR,
                                       exception_types=spec.exception_types,
                                       condition=spec.condition or None)  # fmt: skip
                result.breakpoint = bp
                return result
            if spec.node is not None:
                name, step = split_step(spec.node)
                node_id = self.resolve_node(name)
            elif spec.line is not None and spec.path is not None:
                node_id = self.node_at_line(spec.path, spec.line)
            else:
                raise TargetError("A breakpoint names a node, a source line or node errors")
            result.node_id = node_id
            result.breakpoint = Breakpoint.create(
                node_id=node_id,
                position=BreakpointPosition.STEP if step else BreakpointPosition.BEFORE,
                step=step, condition=spec.condition or None,
                hit_condition=spec.hit_condition or None, log_message=spec.log_message,
            )  # fmt: skip
        except MidrunError as exc:
            result.message = exc.message
        except RecursionError:
            result.message = "The condition nests too deeply"
        return result

    # -- running -----------------------------------------------------------------------

    def start(self, *, stop_on_entry: bool = False) -> None:
        if self._thread is not None:
            raise TargetError("The program is already running")
        if stop_on_entry:
            self.session.controller.request_pause()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="midrun-debuggee", daemon=True)  # fmt: skip
        self._thread.start()

    async def _main(self) -> None:
        from midrun.engine.edits import check_edit, edit_suspended
        from midrun.engine.executor import Executor, RunStatus
        from midrun.engine.workflow_plan import RunContext

        hook = self.session.create_hook()
        try:
            if self.kind_of_run == "stategraph":
                self.result = await self._graph.invoke(self.inputs, debug_hook=hook)
                return
            executor = Executor(hooks=[hook])
            context = RunContext(output_dir=Path(self._output_dir))
            result = await executor.run(self.workflow, self.registry, context=context)
            while result.status == RunStatus.SUSPENDED and self._edit is not None:
                node_id, name, value, position = self._edit
                self._edit = None
                error: MidrunError | None = None
                state = result.state
                try:
                    state = edit_suspended(result.state, node_id, name, value, self.registry)
                    self._current = check_edit(self._current, node_id, name, value,
                                               self.registry)  # fmt: skip
                except MidrunError as exc:
                    error = exc
                # held again where it stood (upstream nodes it recomputes do not stop);
                # the edit is settled when it is
                self.session.controller.hold_at(node_id, position)
                self._edit_error = error
                result = await executor.resume(state, self.registry, context=context)
            self.result = result
        except Exception as exc:  # the program's own failure, reported as its end
            self.result = exc
            self._emit("completed", {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            self._settle_edit(TargetError("The run ended before the edit applied"))

    def _settle_edit(self, error: MidrunError | None) -> None:
        future, loop = self._edited, self._edited_loop
        if future is None or loop is None:
            return
        self._edited = self._edited_loop = None

        def settle() -> None:
            if not future.done():
                future.set_result(error)

        loop.call_soon_threadsafe(settle)

    async def set_input(self, node_id: str, name: str, value: Any) -> None:
        """Change a held workflow node's input from the next step (a mid-run edit with the
        API's checks): the run is saved, edited and continued, and held again at that
        node's next point of the same kind (its next sampler step, or its start). A
        refused edit raises; the run is held again unedited."""
        if self.kind_of_run != "workflow":
            raise TargetError("Only a workflow node's inputs are edited (a StateGraph's state "
                              "is what its nodes return)")  # fmt: skip
        if not self.session.is_paused:
            raise TargetError("The run is not paused: pause it, then edit")
        loop = asyncio.get_running_loop()
        edited: asyncio.Future[Any] = loop.create_future()
        self._edited, self._edited_loop = edited, loop
        from midrun.engine.edits import check_edit

        context = self.session.get_pause_context()
        assert context is not None
        # Types and ranges first, so a refused value leaves the run where it stands; what
        # only the saved run can tell (a cold input mid-sampler) is checked on it.
        check_edit(self._current, node_id, name, value, self.registry)
        self._edit = (node_id, name, value, context.position.value)
        await self.session.suspend()
        error = await edited
        if error is not None:
            raise error

    def _relay(self, event: str, data: dict[str, Any]) -> None:
        if event == "resumed" and self._edit is not None:
            return  # saved to be edited, not continued
        if event == "paused" and self._edited is not None:
            self._settle_edit(self._edit_error)  # held again after the edit
        if event == "completed" and data.get("status") == "suspended":
            return  # saved for an edit: it goes on
        self._emit(event, data)

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event, data)

    @property
    def context(self) -> PauseContext | None:
        return self.session.get_pause_context()

    def frames(self) -> list[Frame]:
        """Where the run is held: the node, then each subgraph it is inside."""
        context = self.context
        if context is None:
            return []
        frames = [Frame(describe(context), context.node_id, *self._source(context.node_id))]
        parts = context.node_id.split(":")
        for depth in range(len(parts) - 1, 0, -1):
            outer = ":".join(parts[:depth])
            frames.append(Frame(f"subgraph {outer}", outer, *self._source(outer)))
        return frames

    def _source(self, node_id: str) -> tuple[str | None, int | None]:
        if node_id in self.functions:
            path, first, _ = self.functions[node_id]
            return path, first
        if node_id in self.node_lines:
            return str(self.program), self.node_lines[node_id]
        return None, None

    def scopes(self) -> list[tuple[str, Any]]:
        """The values shown where the run is held, by scope."""
        context = self.context
        if context is None:
            return []
        state = context.state
        if context.kind == "stategraph":
            return [("State", state)]
        scopes = [("Inputs", state.get("inputs", {}))]
        if state.get("outputs") is not None:
            scopes.append(("Outputs", state["outputs"]))
        if state.get("step_state") is not None:
            scopes.append(("Sampler", state["step_state"]))
        return scopes

    def evaluate(self, text: str) -> Any:
        """An expression of midrun's safe language where the run is held."""
        context = self.context
        if context is None:
            raise TargetError("The run is not paused: values are read where it stopped")
        return Expression(text).evaluate(names_at(context))

    # -- commands ----------------------------------------------------------------------

    def command(self, name: str) -> None:
        """continue, step_over, step_into, step_out (the run must be held)."""
        self.session.controller.resume(name)

    def pause(self) -> None:
        self.session.controller.request_pause()

    def terminate(self) -> None:
        self.session.controller.request_stop()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def tensor_text(value: Any, *, device: bool = True) -> str:
    """A tensor on one line, as both front ends show it: ``tensor torch.float32 [1, 4, 8,
    8] on cpu min=-1 max=1 mean=0`` (``device=False``: without ``on cpu``)."""
    from midrun.debug.inspector import summarise

    s = summarise(value)
    stats = "".join(f" {k}={s[k]:.4g}" for k in ("min", "max", "mean") if k in s)
    where = f" on {s.get('device')}" if device else ""
    return f"tensor {s.get('dtype')} {s.get('shape')}{where}{stats}"


def find_node(name: str, nodes: Mapping[str, tuple[str | None, str | None]], where: str
              ) -> str:  # fmt: skip
    """The id of the node ``name`` stands for: an id itself, or a title or class type only
    one of ``nodes`` (``{id: (class_type, title)}``) has."""
    if name in nodes:
        return name
    matches = [nid for nid, (kind, title) in nodes.items() if name in (kind, title)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise TargetError(f"{name!r} names nodes {', '.join(matches)}; give one node's id")
    raise TargetError(f"No node {name!r} in {where}; nodes: {', '.join(list(nodes)[:30])}")


def split_step(text: str) -> tuple[str, int | None]:
    """``"KSampler@12"`` -> ``("KSampler", 12)``; ``"review"`` -> ``("review", None)``."""
    if "@" not in text:
        return text, None
    name, _, at = text.rpartition("@")
    if not at.isdigit() or int(at) < 1:
        raise TargetError(f"{text!r}: after '@' comes a sampler step (an integer >= 1)")
    return name, int(at)


def parse_value(text: str) -> Any:
    """A value typed in a debugger: JSON (``5.5``, ``"a cat"``, ``[1, 2]``), else the text."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text




class AttachTarget:
    """A job on a running midrun server, over its HTTP API and WebSocket: breakpoints are
    the job's (``/api/jobs/{id}/breakpoints``), a stop is the job paused (its checkpoint
    saved, the worker free), continue resumes it, a step is a one-shot step request, and
    setting an input is a pending edit (``PUT /api/jobs/{id}/params``), applied from the
    next step when it continues, with the API's checks and undo."""

    kind = "attach"

    def __init__(self, server: str, job_id: str, *, token: str | None = None) -> None:
        import httpx

        self.server, self.job_id = server.rstrip("/"), job_id
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.token = token
        self.http = httpx.Client(base_url=self.server, timeout=30, headers=headers)
        job = self._call("GET", f"/api/jobs/{job_id}")
        self.workflow: dict[str, Any] = (job.get("workflow") or {}).get("prompt") or {}
        self.program = Path(f"job {job_id}")
        self.listeners: list[Listener] = []
        self._groups: dict[str, list[str]] = {}
        self._context: PauseContext | None = None
        self._hits: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._edit_ids: list[int] = []
        self._resuming = False

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            answer = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TargetError(f"The server at {self.server} did not answer {method} {path}: "
                              f"{exc}") from exc  # fmt: skip
        data = answer.json() if answer.content else {}
        if answer.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            raise TargetError(f"{method} {path}: {answer.status_code} {message or answer.text}")
        return data

    @property
    def nodes(self) -> list[str]:
        return list(self.workflow)

    def node_label(self, node_id: str) -> str:
        spec = self.workflow.get(node_id) or {}
        kind = spec.get("class_type")
        return f"node {node_id} ({kind})" if kind else f"node {node_id}"

    def resolve_node(self, name: str) -> str:
        named = {nid: (spec.get("class_type"), (spec.get("_meta") or {}).get("title"))
                 for nid, spec in self.workflow.items()}  # fmt: skip
        return find_node(name, named, f"job {self.job_id}")

    def replace_breakpoints(self, group: str, specs: Iterable[BreakpointSpec]
                            ) -> list[BreakpointResult]:  # fmt: skip
        for bp_id in self._groups.pop(group, []):
            with contextlib.suppress(TargetError):
                self._call("DELETE", f"/api/breakpoints/{bp_id}")
        results, held = [], []
        for spec in specs:
            result = BreakpointResult(spec, line=spec.line)
            try:
                if spec.node is None:
                    raise TargetError("A job's breakpoints name nodes (function breakpoints, "
                                      "NODE@STEP for a sampler step); node errors and source "
                                      "lines are for launched programs")  # fmt: skip
                name, step = split_step(spec.node)
                body: dict[str, Any] = {"node_id": self.resolve_node(name)}
                if step is not None:
                    body["step"] = step
                if spec.condition:
                    body["condition"] = spec.condition
                if spec.log_message:
                    body["log"] = spec.log_message
                if spec.hit_condition:
                    raise TargetError("A job's breakpoints take no hit count; use a "
                                      "condition such as 'step >= 10'")  # fmt: skip
                made = self._call("POST", f"/api/jobs/{self.job_id}/breakpoints", body)
                result.node_id = body["node_id"]
                result.breakpoint = Breakpoint.create(node_id=body["node_id"],
                                                      id=made["id"])  # fmt: skip
                held.append(made["id"])
            except MidrunError as exc:
                result.message = exc.message
            results.append(result)
        self._groups[group] = held
        return results

    # -- following the job ---------------------------------------------------------------

    def start(self, *, stop_on_entry: bool = False) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(ready,),
                                        name="midrun-attach", daemon=True)  # fmt: skip
        self._thread.start()
        ready.wait(10)
        state = self._call("GET", f"/api/jobs/{self.job_id}/state")
        if state["state"] == "paused":
            self._held(state)
        elif state["state"] in ("completed", "failed", "aborted"):
            self._end(state["state"], state.get("error"))
        elif stop_on_entry:
            self.pause()

    def _follow(self, ready: threading.Event) -> None:
        from urllib.parse import quote

        from websockets.sync.client import connect

        url = self.server.replace("http", "ws", 1) + "/ws?clientId=" + new_client_id()
        if self.token:
            url += "&token=" + quote(self.token)
        try:
            with connect(url, open_timeout=10) as socket:
                ready.set()
                while not self._stop.is_set() and not self._ended:
                    try:
                        text = socket.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if isinstance(text, str):
                        self._message(json.loads(text))
        except Exception as exc:  # the server went away: the session ends
            if not self._ended:
                self._end("disconnected", f"{type(exc).__name__}: {exc}")
        finally:
            ready.set()

    def _message(self, message: dict[str, Any]) -> None:
        kind, data = message.get("type", ""), message.get("data") or {}
        if not kind.startswith("midrun.") or data.get("job_id") != self.job_id:
            return
        kind = kind.removeprefix("midrun.")
        if kind == "breakpoint_hit":
            self._hits.append(str(data.get("breakpoint_id")))
        elif kind == "paused":
            self._held(self._call("GET", f"/api/jobs/{self.job_id}/state"))
        elif kind == "logpoint":
            self._emit("output", {"message": data.get("message"), "node_id": data.get("node_id"),
                                  "step": data.get("step")})  # fmt: skip
        elif kind == "resumed":
            if self._resuming:
                self._resuming = False  # our own continue or step
            else:  # someone else resumed it (the canvas, the API)
                self._context = None
                self._emit("continued", {})
        elif kind in ("completed", "failed", "aborted"):
            self._end(kind, data.get("error") or data.get("reason"))

    def _held(self, state: dict[str, Any]) -> None:
        node = state.get("node") or ""
        inputs = self._inputs(node)
        by = state.get("paused_by")
        reason = {"breakpoint": PauseReason.BREAKPOINT, "step": PauseReason.STEP}.get(
            by, PauseReason.PAUSE_REQUEST)  # fmt: skip
        position = state.get("position") or "before"
        self._context = PauseContext(
            run_id=self.job_id, node_id=node,
            class_type=(self.workflow.get(node) or {}).get("class_type", ""),
            position=BreakpointPosition(position if position != "error" else "on_error"),
            reason=reason, step=state.get("step"), total_steps=state.get("total_steps"),
            breakpoint_ids=self._hits, state={"inputs": inputs, "job": {
                k: state.get(k) for k in ("state", "paused_by", "checkpoint_step",
                                          "pending_edits", "modified_params",
                                          "active_seconds")}},
        )  # fmt: skip
        self._hits = []
        self._emit("paused", {})

    def _end(self, status: str, error: Any = None) -> None:
        if self._ended:
            return
        self._ended, self._context = True, None
        self._emit("completed", {"status": status, "error": error})

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event, data)

    # -- where it stopped and commands ---------------------------------------------------

    @property
    def context(self) -> PauseContext | None:
        return self._context

    def frames(self) -> list[Frame]:
        context = self._context
        return [] if context is None else [Frame(describe(context), context.node_id)]

    def scopes(self) -> list[tuple[str, Any]]:
        context = self._context
        if context is None:
            return []
        return [("Inputs", context.state["inputs"]), ("Job", context.state["job"])]

    def evaluate(self, text: str) -> Any:
        if self._context is None:
            raise TargetError("The job is not paused: values are read where it stopped")
        return Expression(text).evaluate(names_at(self._context))

    async def set_input(self, node_id: str, name: str, value: Any) -> None:
        """A pending edit of the paused job, applied from the next step when it goes on."""
        body = {"node_id": node_id, "input": name, "value": value}
        made = await asyncio.to_thread(self._call, "PUT", f"/api/jobs/{self.job_id}/params", body)
        self._edit_ids.extend(made.get("edit_ids", []))
        if self._context is not None:
            self._context.state["inputs"][name] = value

    def undo(self) -> None:
        """Withdraw the last edit made here (the job keeps its previous value)."""
        if not self._edit_ids:
            raise TargetError("No edit of this session to undo")
        self._call("DELETE", f"/api/jobs/{self.job_id}/params/{self._edit_ids.pop()}")
        if self._context is not None:  # the values it will go on with
            self._context.state["inputs"] = self._inputs(self._context.node_id)

    def _inputs(self, node_id: str) -> dict[str, Any]:
        """The node's parameters as the job will run them (pending edits applied)."""
        params = self._call("GET", f"/api/jobs/{self.job_id}/parameters")
        return {p["field"]: p["value"] for p in params if p.get("node_id") == node_id}

    def command(self, name: str) -> None:
        if self._context is None:
            raise TargetError("The job is not paused")
        self._context, self._resuming = None, True
        if name == "continue":
            self._call("POST", f"/api/jobs/{self.job_id}/resume", {})
        else:
            self._call("POST", f"/api/jobs/{self.job_id}/step",
                       {"mode": name.removeprefix("step_")})  # fmt: skip

    def pause(self) -> None:
        self._call("POST", f"/api/jobs/{self.job_id}/pause")

    def terminate(self) -> None:
        with contextlib.suppress(TargetError):
            self._call("POST", f"/api/jobs/{self.job_id}/abort", {"reason": "debugger"})

    def join(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def new_client_id() -> str:
    from midrun.core.ids import new_id

    return f"midrun-dap-{new_id()[:12]}"
