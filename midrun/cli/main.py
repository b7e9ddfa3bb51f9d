"""``midrun``: validate, inspect and run workflows; serve them; control jobs.

midrun validate FILE      exit 0 if valid; 1 with ComfyUI's node_errors JSON if not
midrun params FILE        the workflow's parameters as JSON
midrun run FILE           run it here (optionally stopping at a node/step and saving state),
                          or with --server URL on a server, following it live
midrun resume DIR         continue a saved run (or, given a job id, resume a paused job)
midrun demo               the example pipeline, paused mid-run and resumed from disk
midrun serve              the HTTP/WebSocket server; midrun users: its tokens
midrun jobs|pause|resume|abort|edit|undo|preview|breakpoints|pipeline|batch
                          control jobs on a server (--server URL) or, without one, on the
                          data directory's database directly
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from midrun.core.errors import MidrunError
from midrun.debug.trace import StopAt
from midrun.engine.control import Hook, Position
from midrun.engine.executor import Executor, RunResult, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext, WorkflowPlan
from midrun.graph.loading import read_workflow_file
from midrun.graph.parameters import extract_parameters
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow
from midrun.nodes import builtin_registry
from midrun.nodes.runtime import with_runtime

from . import serve
from .client import Client, ClientError, Edit, HttpClient, connect
from .progress import ProgressPrinter


def _registry(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return builtin_registry(models_dir=args.models_dir, input_dir=args.input_dir)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_validate(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        workflow = read_workflow_file(args.file, registry)
    except MidrunError as exc:
        _print_json({"error": exc.to_dict(), "node_errors": {}})
        return 1
    result = validate(workflow, registry, args.target or None)
    if result.ok:
        _print_json({"ok": True, "outputs": result.outputs, "nodes": len(workflow)})
        return 0
    _print_json(
        {
            "error": result.error.to_dict() if result.error else None,
            "node_errors": result.node_errors,
        }
    )
    return 1


def cmd_params(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        workflow = read_workflow_file(args.file, registry)
    except MidrunError as exc:
        _print_json({"error": exc.to_dict()})
        return 1
    _print_json(extract_parameters(workflow, registry))
    return 0


def _report(result: RunResult, state_dir: Path | None) -> int:
    plan = result.plan
    if result.status == RunStatus.SUSPENDED and result.state is not None and state_dir is not None:
        result.state.save(state_dir)
        print(f"suspended ({result.reason}); state saved to {state_dir}", file=sys.stderr)
        return 0
    if result.status == RunStatus.FAILED:
        _print_json({"status": "failed", "error": result.error.to_dict() if result.error else None})
        return 1
    if isinstance(plan, WorkflowPlan):
        _print_json(
            {
                "status": result.status.value,
                "run_id": result.run_id,
                "outputs": plan.ui,
                "executed": plan.executed,
            }
        )
    return 0 if result.status == RunStatus.COMPLETED else 1


def _stop_hook(spec: str | None) -> list[Hook]:
    if not spec:
        return []
    node_id, _, step = spec.partition(":")
    return [
        StopAt(
            node_id,
            Position.STEP if step else Position.BEFORE,
            int(step) if step else None,
            reason=f"stop at {spec}",
        )
    ]


def _with_diffusion(registry, class_types: set[str], args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return with_runtime(registry, class_types, args.models_dir, device=args.device,
                        precision=args.precision, output_dir=args.output_dir,
                        input_dir=args.input_dir or "input",
                        extra_model_paths=args.extra_model_paths)  # fmt: skip


def _execute(args: argparse.Namespace, resume: bool) -> int:
    """``run`` and ``resume``: the same hooks, context, error handling and report."""
    registry = _registry(args)
    hooks: list[Hook] = [*_stop_hook(args.stop_at)]
    if not args.quiet:
        hooks.append(ProgressPrinter())
    executor = Executor(hooks=hooks)
    context = RunContext(output_dir=Path(args.output_dir))
    try:
        if resume:
            state = RunState.load(args.state_dir)
            workflow_doc = state.workflow_checkpoint().workflow if state.kind == "workflow" else {}
            types = {n.get("class_type") for n in workflow_doc.values() if isinstance(n, dict)}
            registry = _with_diffusion(registry, types, args)
            coro = executor.resume(state, registry, context=context)
        else:
            workflow = read_workflow_file(args.file, registry)
            if args.set:
                workflow = Workflow.from_api(apply_sets(workflow.to_api(), args.set))
            types = {spec.class_type for spec in workflow.nodes.values()}
            registry = _with_diffusion(registry, types, args)
            coro = executor.run(workflow, registry, context=context)
        result = asyncio.run(coro)
    except MidrunError as exc:
        _print_json({"status": "failed", "error": exc.to_dict()})
        return 1
    return _report(result, Path(args.state) if args.state else None)


def cmd_run(args: argparse.Namespace) -> int:
    if args.server:
        return run_on_server(args)
    return _execute(args, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    """A saved run's folder continues here; a job id is resumed where the job is."""
    if Path(args.state_dir).is_dir() or "/" in args.state_dir:  # job ids hold no "/"
        return _execute(args, resume=True)
    with _client(args) as client:
        return _show(args, client.resume(args.state_dir, True if args.front else None))


def cmd_demo(args: argparse.Namespace) -> int:
    from midrun.cli.demo import run_demo

    return run_demo(Path(args.data_dir))


# -- job control: one command each, over HTTP or on the local database -------------------


def _client(args: argparse.Namespace) -> Client:
    return connect(args.server, args.token, serve.data_config(args))


def _show(args: argparse.Namespace, data: Any, line: str | None = None) -> int:
    """``--json``: the answer as JSON; else one line about it."""
    if args.json or (line is None and not isinstance(data, dict)):
        _print_json(data)
    else:
        print(line if line is not None else f"job {data['id']}: {data['state']}")
    return 0


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> Edit:
    """``node.field=value``."""
    key, eq, value = text.partition("=")
    node_id, dot, field = key.strip().rpartition(".")
    if not eq or not dot or not node_id or not field:
        raise ClientError(f"{text!r} is not node.field=value (for example 3.cfg=5.5)")
    return Edit(node_id, field, parse_value(value))


def apply_sets(workflow: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """The API workflow with each ``node.field=value`` set (the server validates)."""
    out = json.loads(json.dumps(workflow))
    for text in assignments:
        edit = parse_assignment(text)
        node = out.get(edit.node_id)
        if not isinstance(node, dict):
            raise ClientError(f"--set {text}: the workflow has no node {edit.node_id!r} "
                              f"(its nodes: {', '.join(sorted(out))})")  # fmt: skip
        node.setdefault("inputs", {})[edit.input] = edit.value
    return out


def progress_text(progress: dict[str, Any]) -> str:
    if not progress.get("node"):
        return ""
    step = progress.get("step")
    total = progress.get("total_steps")
    at = f" step {step}/{total}" if step is not None and total else ""
    return f"node {progress['node']}{at}" + (f" ({progress['held']})" if progress.get("held")
                                            else "")  # fmt: skip


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "show":
            if not args.job_id:
                raise ClientError("jobs show needs a job id")
            _print_json(client.job_state(args.job_id))
            return 0
        found = client.list_jobs(args.limit)
    if args.json:
        _print_json(found)
        return 0
    for job in found:
        owner = job.get("owner") or "-"
        print(f"{job['id']}  {job['state']:<9}  {owner:<10}  {progress_text(job['progress'])}")
    if not found:
        print("no jobs")
    return 0


def _wait(client: Client, job_id: str, states: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client.job_state(job_id)
        if state["state"] in states or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


ENDED = {"completed", "failed", "aborted"}


def cmd_pause(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.pause(args.job_id)
        if args.wait and job["state"] == "pausing":
            job = {"id": args.job_id, **_wait(client, args.job_id, {"paused"} | ENDED,
                                              args.timeout)}  # fmt: skip
    return _show(args, job)


def cmd_abort(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.abort(args.job_id, args.reason or "")
        if args.wait and job["state"] not in ENDED:
            job = {"id": args.job_id, **_wait(client, args.job_id, ENDED, args.timeout)}
    return _show(args, job)


def cmd_edit(args: argparse.Namespace) -> int:
    edits = [parse_assignment(text) for text in args.assignments]
    with _client(args) as client:
        result = client.edit(args.job_id, edits)
    if args.json:
        return _show(args, result)
    made = {e["id"]: e for e in result["edits"]}
    for edit_id in result["edit_ids"]:
        e = made[edit_id]
        print(f"edit {edit_id}: {e['node_id']}.{e['input_name']} {json.dumps(e['old'])} -> "
              f"{json.dumps(e['new'])} ({e['status']})")  # fmt: skip
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.undo(args.job_id, args.edit_id)
    if args.json:
        return _show(args, result)
    for e in result["undone"]:
        print(f"undone edit {e['id']}: {e['node_id']}.{e['input_name']} back to "
              f"{json.dumps(e['old'])}")  # fmt: skip
    if not result["undone"]:
        print(f"job {args.job_id} had no pending edits")
    return 0


def write_image(path: Path, data: bytes, mime: str) -> None:
    """The image in the format ``path``'s suffix names (converted when it differs)."""
    import io

    from PIL import Image

    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    wanted = formats.get(path.suffix.lower())
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(data)) as image:
        if wanted is None or image.format == wanted:
            path.write_bytes(data)
            return
        image.convert("RGB" if wanted == "JPEG" else image.mode).save(path, wanted)


def cmd_preview(args: argparse.Namespace) -> int:
    with _client(args) as client:
        preview = client.preview(args.job_id, args.step)
    out = Path(args.output)
    write_image(out, preview.data, preview.mime)
    print(f"preview of step {preview.step} saved to {out}")
    return 0


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {"node_id": args.node_id}
    for name in ("position", "step", "condition", "log"):
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    if args.disabled:
        spec["enabled"] = False
    return spec


def _bp_line(bp: dict[str, Any]) -> str:
    where = f"job {bp['job_id']}" if bp.get("job_id") else f"workflow {bp.get('workflow_id')}"
    at = bp.get("position") or "before"
    if bp.get("step") is not None:
        at += f" {bp['step']}"
    extra = "".join(f" {k}={bp[k]!r}" for k in ("condition", "log") if bp.get(k))
    state = "" if bp.get("enabled", True) else " (disabled)"
    return f"{bp['id']}  {where}  node {bp['node_id']} {at}{extra}{state}"


def cmd_breakpoints(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "list":
            found = client.breakpoints(job_id=args.job, workflow_id=args.workflow)
            if args.json:
                return _show(args, found)
            for bp in found:
                print(_bp_line(bp))
            return 0
        if args.action == "add":
            bp = client.add_breakpoint(_spec(args), job_id=args.job, workflow_id=args.workflow)
        elif args.action == "remove":
            bp = client.remove_breakpoint(args.bp_id)
        else:
            bp = client.enable_breakpoint(args.bp_id, args.action == "enable")
    verb = {"add": "added", "remove": "removed", "enable": "enabled", "disable": "disabled"}
    return _show(args, bp, f"{verb[args.action]}: {_bp_line(bp)}")


def cmd_pipeline(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.pipeline(None if args.action == "status" else args.action)
    paused = ", ".join(status.get("paused_jobs") or []) or "none"
    line = (f"pipeline {status['state']}; paused jobs: {paused}; "
            f"queued: {len(status.get('pending') or [])}; "
            f"workers: {len(status.get('workers') or [])}")  # fmt: skip
    return _show(args, status, line)


def _variations(args: argparse.Namespace, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``--seed``, ``--cycle`` and ``--sweep`` as the server's variations."""
    out: list[dict[str, Any]] = []
    if args.seed:
        seeds = [p for p in params if p["type"] == "seed"]
        if args.seed_field:
            node_id, _, field = args.seed_field.rpartition(".")
            seeds = [p for p in params if (p["node_id"], p["field"]) == (node_id, field)]
        if not seeds:
            raise ClientError("--seed: the workflow has no seed input"
                              + (f" {args.seed_field}" if args.seed_field else ""))  # fmt: skip
        batch_seed = random.randrange(2**31)
        for p in seeds:
            out.append({"type": "seed", "node_id": p["node_id"], "field": p["field"],
                        "mode": args.seed, "start": int(p["value"]),
                        "batch_seed": batch_seed})  # fmt: skip
    for text in args.cycle or []:
        edit = parse_assignment(text)
        values = [parse_value(v) for v in text.partition("=")[2].split(",")]
        out.append({"type": "cycle", "node_id": edit.node_id, "field": edit.input,
                    "values": values})  # fmt: skip
    for text in args.sweep or []:
        edit = parse_assignment(text)
        parts = text.partition("=")[2].split(":")
        numbers = [parse_value(v) for v in parts]
        if len(numbers) != 3 or not all(isinstance(n, (int, float)) for n in numbers):
            raise ClientError(f"--sweep {text}: expected node.field=start:stop:step")
        out.append({"type": "sweep", "node_id": edit.node_id, "field": edit.input,
                    "start": numbers[0], "stop": numbers[1], "step": numbers[2]})  # fmt: skip
    return out


def read_api_workflow(args: argparse.Namespace, path: str) -> dict[str, Any]:
    """The file's workflow in API format (a UI file is converted with midrun's nodes)."""
    try:
        workflow = read_workflow_file(path, _registry(args))
    except MidrunError as exc:
        raise ClientError(f"{path}: {exc.message}") from exc
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    document = workflow.to_api()
    return apply_sets(document, args.set) if getattr(args, "set", None) else document


def cmd_batch(args: argparse.Namespace) -> int:
    document = read_api_workflow(args, args.file)
    with _client(args) as client:
        saved = client.save_workflow(args.name or Path(args.file).stem, document)
        variations = _variations(args, client.parameters(saved["id"]) if args.seed else [])
        batch = client.batch(saved["id"], args.count, variations)
    if args.json:
        return _show(args, batch)
    print(f"batch {batch['id']}: {batch['total_count']} jobs (workflow {saved['id']})")
    for job in batch["jobs"]:
        used = ", ".join(f"{k}={json.dumps(v)}" for k, v in (job["parameters_used"] or {}).items())
        print(f"  {job['batch_index']}: {job['id']}  {job['state']}  {used}")
    return 0


# -- run on a server, following it ------------------------------------------------------


class Terminal:
    """One status line that rewrites itself on a terminal, and plain lines elsewhere."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._inline = False

    def line(self, text: str) -> None:
        if self._inline:
            self.stream.write("\n")
            self._inline = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        if not self.tty:
            self.line(text)
            return
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._inline = True


def bar(value: int, total: int, width: int = 24) -> str:
    filled = round(width * value / total) if total else 0
    return "#" * filled + "-" * (width - filled)


class RunFollower:
    """A job's WebSocket messages, as lines on a terminal; says when the run has ended
    (an exit code) and asks what to do on Ctrl-C."""

    def __init__(self, client: HttpClient, job_id: str, workflow: dict[str, Any],
                 terminal: Terminal) -> None:  # fmt: skip
        self.client = client
        self.job_id = job_id
        self.types = {n: d.get("class_type", "?") for n, d in workflow.items()}
        self.term = terminal
        self.decile: tuple[str, int] | None = None
        self.preview: int | None = None
        self.noted_preview: int | None = None
        self.step = ""

    def label(self, node: str) -> str:
        return f"[{node} {self.types.get(node, '?')}]"

    def handle(self, message: dict[str, Any]) -> int | None:
        kind, data = message.get("type", ""), message.get("data") or {}
        if data.get("prompt_id", data.get("job_id")) != self.job_id:
            return None
        handler = getattr(self, "on_" + kind.replace("midrun.", "midrun_"), None)
        return handler(data) if handler is not None else None

    def on_executing(self, data: dict[str, Any]) -> None:
        if data.get("node") is not None:
            self.term.line(f"{self.label(data['node'])} running")

    def on_execution_cached(self, data: dict[str, Any]) -> None:
        if data.get("nodes"):
            self.term.line(f"cached: {', '.join(data['nodes'])}")

    def on_progress(self, data: dict[str, Any]) -> None:
        value, total, node = int(data["value"]), int(data["max"]), str(data.get("node"))
        self.step = f"step {value}/{total}"
        text = f"{self.label(node)} {self.step} {bar(value, total)} {100 * value // total:3d}%"
        if self.term.tty:
            extra = f"  preview saved (step {self.preview})" if self.preview else ""
            self.term.status(text + extra)
            return
        decile = (node, 10 * value // total)
        if decile != self.decile or value == total:
            self.decile = decile
            self.term.line(text)
            self._note_preview()

    def _note_preview(self) -> None:
        if self.preview is not None and self.preview != self.noted_preview:
            self.noted_preview = self.preview
            self.term.line(f"preview saved (step {self.preview})")

    def on_midrun_preview_saved(self, data: dict[str, Any]) -> None:
        self.preview = data.get("step")

    def on_midrun_pausing(self, data: dict[str, Any]) -> None:
        self.term.line("pausing at the next step...")

    def on_midrun_paused(self, data: dict[str, Any]) -> int:
        at = f" at {self.step}" if self.step else ""
        self.term.line(f"job {self.job_id} paused{at}; continue it with: "
                       f"midrun resume {self.job_id} --server {self.client.url}")  # fmt: skip
        return 0

    def on_midrun_resumed(self, data: dict[str, Any]) -> None:
        self.term.line("resumed")

    def on_midrun_aborted(self, data: dict[str, Any]) -> int:
        reason = data.get("reason")
        self.term.line(f"job {self.job_id} aborted" + (f": {reason}" if reason else ""))
        return 1

    def on_execution_error(self, data: dict[str, Any]) -> int:
        node = data.get("node_id") or ""
        self.term.line(f"{self.label(node)} failed: {data.get('exception_message', '')}")
        _print_json({"status": "failed", "job_id": self.job_id,
                     "error": data.get("exception_message")})  # fmt: skip
        return 1

    def on_execution_success(self, data: dict[str, Any]) -> int:
        self._note_preview()
        job = self.client.job(self.job_id)
        self.term.line(f"job {self.job_id} completed")
        _print_json({"status": "completed", "job_id": self.job_id,
                     "outputs": job.get("outputs", {})})  # fmt: skip
        return 0


class Interrupts:
    """Ctrl-C while following a run: noted, and answered by :meth:`ask`; a second Ctrl-C
    while asking stops following (the job is left as it is)."""

    def __init__(self) -> None:
        self.pending = False
        self.asking = False
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.asking:
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self) -> Interrupts:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def ask(self, term: Terminal) -> str:
        """``p``, ``a`` or ``c``; ``detach`` on end of input or a second Ctrl-C."""
        self.pending = False
        self.asking = True
        try:
            while True:
                term.line("[p]ause, [a]bort or [c]ontinue? ")
                answer = sys.stdin.readline()
                if not answer:
                    return "detach"
                choice = answer.strip().lower()[:1]
                if choice in ("p", "a", "c"):
                    return choice
        except KeyboardInterrupt:
            return "detach"
        finally:
            self.asking = False


def follow(client: HttpClient, job_id: str, workflow: dict[str, Any], stream: Any) -> int:
    term = Terminal()
    follower = RunFollower(client, job_id, workflow, term)
    with Interrupts() as interrupts:
        while True:
            if interrupts.pending:
                code = _answer(client, job_id, interrupts.ask(term), term)
                if code is not None:
                    return code
            message = stream.next(0.2)
            if message is None:
                term.line(f"lost the server's WebSocket; job {job_id} carries on there")
                return 1
            code = follower.handle(message) if message else None
            if code is not None:
                return code


def _answer(client: HttpClient, job_id: str, choice: str, term: Terminal) -> int | None:
    """Act on the Ctrl-C answer; an exit code only when following stops here."""
    try:
        if choice == "p":
            client.pause(job_id)
        elif choice == "a":
            client.abort(job_id, "aborted from the command line")
    except ClientError as exc:
        term.line(f"error: {exc}")
    if choice == "detach":
        term.line(f"stopped following; job {job_id} carries on on the server")
        return 130
    return None


def run_on_server(args: argparse.Namespace) -> int:
    import uuid

    workflow = read_api_workflow(args, args.file)
    client = HttpClient(args.server, args.token)
    client_id = uuid.uuid4().hex
    try:
        stream = client.events(client_id)  # before submitting: no message is missed
        try:
            job_id = client.submit(workflow, client_id)
            print(f"job {job_id} queued on {client.url}", file=sys.stderr, flush=True)
            return follow(client, job_id, workflow, stream)
        finally:
            stream.close()
    finally:
        client.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midrun", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--models-dir",
            default=os.environ.get("MIDRUN_MODELS_DIR"),
            help="models folder laid out like ComfyUI's (checkpoints/, loras/, vae/)",
        )
        p.add_argument(
            "--input-dir", default=os.environ.get("MIDRUN_INPUT_DIR"), help="folder of input images"
        )

    p = sub.add_parser("validate", help="check a workflow (API or UI format)")
    p.add_argument("file")
    p.add_argument("--target", action="append", help="partial execution target (repeatable)")
    common(p)
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("params", help="list a workflow's parameters as JSON")
    p.add_argument("file")
    common(p)
    p.set_defaults(fn=cmd_params)

    for name, fn in (("run", cmd_run), ("resume", cmd_resume)):
        p = sub.add_parser(
            name, help="run a workflow (here, or on a server with --server)" if name == "run"
            else "resume a saved run (a folder) or a paused job (an id)",
        )
        if name == "resume":
            p.add_argument("state_dir", metavar="DIR_OR_JOB_ID")
            p.add_argument("--front", action="store_true", help="a job: ahead of the queue")
        else:
            p.add_argument("file")
            p.add_argument("--set", action="append", metavar="NODE.FIELD=VALUE",
                           help="change an input first (JSON value, else text; repeatable)")
        p.add_argument("--output-dir", default="output")
        p.add_argument("--stop-at", help="NODE or NODE:STEP: suspend there")
        p.add_argument("--state", help="where to save the run state if it suspends")
        p.add_argument("--quiet", action="store_true")
        p.add_argument(
            "--device",
            default=os.environ.get("MIDRUN_DEVICE", "auto"),
            help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps",
        )
        p.add_argument(
            "--precision",
            default=os.environ.get("MIDRUN_PRECISION", "auto"),
            choices=("auto", "fp32", "fp16", "bf16"),
        )
        p.add_argument(
            "--extra-model-paths",
            default=os.environ.get("MIDRUN_EXTRA_MODEL_PATHS"),
            help="ComfyUI extra_model_paths.yaml adding model folders",
        )
        common(p)
        _connection(p, paths=False)
        p.set_defaults(fn=fn)

    p = sub.add_parser("demo", help="run the example pipeline with a mid-run pause")
    p.add_argument("--data-dir", default=os.environ.get("MIDRUN_DATA_DIR", "data"))
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("dap", help="a Debug Adapter Protocol server (VS Code, any DAP client)")
    p.add_argument("--port", type=int, default=None,
                   help="serve on 127.0.0.1:PORT instead of stdio (0: any free port)")
    p.add_argument("--once", action="store_true", help="with --port: exit after one session")
    p.set_defaults(fn=cmd_dap)

    p = sub.add_parser("debug", help="the terminal debugger: a program file, or a job on a server")
    p.add_argument("target", help="a .py with a module-level 'graph', a workflow .json, or a "
                   "job id (with --server)")
    p.add_argument("--server", default=os.environ.get("MIDRUN_SERVER"),
                   help="the server a job id is on (MIDRUN_SERVER)")
    p.add_argument("--token", default=os.environ.get("MIDRUN_TOKEN"))
    p.add_argument("--models-dir", default=os.environ.get("MIDRUN_MODELS_DIR"))
    p.add_argument("--output-dir", default="output")
    p.add_argument("--device", default=os.environ.get("MIDRUN_DEVICE", "auto"))
    p.set_defaults(fn=cmd_debug)

    serve.add_parsers(sub)
    _client_parsers(sub)
    return parser


def cmd_debug(args: argparse.Namespace) -> int:
    from midrun.cli import debugger

    return debugger.main(args)


def cmd_dap(args: argparse.Namespace) -> int:
    from midrun.cli import dap

    return dap.main(args.port, once=args.once)


def _connection(p: argparse.ArgumentParser, *, paths: bool = True) -> None:
    """Where the jobs are: a server (``--server``), or this data directory's database."""
    env = os.environ.get
    p.add_argument("--server", default=env("MIDRUN_SERVER"),
                   help="the server's URL, e.g. http://127.0.0.1:8188 (MIDRUN_SERVER); "
                   "without one, act on --data-dir's database directly")  # fmt: skip
    p.add_argument("--token", default=env("MIDRUN_TOKEN"), help="bearer token (MIDRUN_TOKEN)")
    p.add_argument("--data-dir", help="data directory when no server is named (MIDRUN_DATA_DIR)")
    p.add_argument("--database-url", help="the jobs database (MIDRUN_DATABASE_URL)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    if paths:
        p.add_argument("--models-dir", default=env("MIDRUN_MODELS_DIR"))
        p.add_argument("--input-dir", default=env("MIDRUN_INPUT_DIR"))


def _client_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("jobs", help="list jobs, or show where one stands")
    p.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    _connection(p)
    p.set_defaults(fn=cmd_jobs)

    for name, fn, text in (("pause", cmd_pause, "pause a job at its next step"),
                           ("abort", cmd_abort, "end a job, keeping what it made")):  # fmt: skip
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--wait", action="store_true", help="until it has " + name + "ed")
        p.add_argument("--timeout", type=float, default=120.0)
        if name == "abort":
            p.add_argument("--reason", default="", help="recorded with the job")
        _connection(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("edit", help="change a job's inputs: NODE.FIELD=VALUE ...")
    p.add_argument("job_id")
    p.add_argument("assignments", nargs="+", metavar="NODE.FIELD=VALUE")
    _connection(p)
    p.set_defaults(fn=cmd_edit)

    p = sub.add_parser("undo", help="withdraw a job's pending edit (or all of them)")
    p.add_argument("job_id")
    p.add_argument("edit_id", nargs="?", type=int)
    _connection(p)
    p.set_defaults(fn=cmd_undo)

    p = sub.add_parser("preview", help="save a job's latest (or step N's) preview image")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", required=True, help="image file (.png, .jpg, .webp)")
    p.add_argument("--step", type=int)
    _connection(p)
    p.set_defaults(fn=cmd_preview)

    _breakpoint_parsers(sub)

    p = sub.add_parser("pipeline", help="pause or resume every running job at once")
    p.add_argument("action", choices=("pause", "resume", "status"))
    _connection(p)
    p.set_defaults(fn=cmd_pipeline)

    p = sub.add_parser("batch", help="queue N jobs of a workflow with variations")
    p.add_argument("file")
    p.add_argument("--count", type=int, help="jobs (default: the longest cycle or sweep)")
    p.add_argument("--seed", choices=("increment", "random", "fixed"),
                   help="vary the workflow's seed inputs, from their current values")
    p.add_argument("--seed-field", metavar="NODE.FIELD", help="the seed input to vary")
    p.add_argument("--cycle", action="append", metavar="NODE.FIELD=A,B,C")
    p.add_argument("--sweep", action="append", metavar="NODE.FIELD=START:STOP:STEP")
    p.add_argument("--set", action="append", metavar="NODE.FIELD=VALUE")
    p.add_argument("--name", help="the saved workflow's name (default: the file's)")
    _connection(p)
    p.set_defaults(fn=cmd_batch)


def _breakpoint_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("breakpoints", help="stop jobs at nodes or steps")
    actions = p.add_subparsers(dest="action", required=True)
    for name in ("add", "list"):
        a = actions.add_parser(name, help=f"{name} a job's or a saved workflow's breakpoints")
        scope = a.add_mutually_exclusive_group(required=True)
        scope.add_argument("--job", help="a job id")
        scope.add_argument("--workflow", help="a saved workflow id (every job of it)")
        if name == "add":
            a.add_argument("node_id")
            a.add_argument("--position", choices=("before", "after", "step"))
            a.add_argument("--step", type=int, help="the sampler step (position step)")
            a.add_argument("--condition", help="e.g. 'step >= 10'")
            a.add_argument("--log", help="a logpoint's message (it never pauses)")
            a.add_argument("--disabled", action="store_true")
        _connection(a)
        a.set_defaults(fn=cmd_breakpoints)
    for name in ("remove", "enable", "disable"):
        a = actions.add_parser(name, help=f"{name} a breakpoint")
        a.add_argument("bp_id")
        _connection(a)
        a.set_defaults(fn=cmd_breakpoints)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
