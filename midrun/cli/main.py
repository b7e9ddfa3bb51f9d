"""``midrun``: validate, inspect and run workflows from the command line.

midrun validate FILE      exit 0 if valid; 1 with ComfyUI's node_errors JSON if not
midrun params FILE        the workflow's parameters as JSON
midrun run FILE           run it (optionally stopping at a node/step and saving state)
midrun resume DIR         continue a saved run
midrun demo               the example pipeline, paused mid-run and resumed from disk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from importlib import resources
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
from midrun.nodes import builtin_registry

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
    """Attach the diffusion runtime when the workflow uses ComfyUI's core nodes (torch is
    imported only then; without the ``diffusion`` extra those nodes stay unimplemented
    and the run is refused with a clear error)."""
    from midrun.nodes.comfy_core import comfy_core_types

    if not class_types & {t.class_type for t in comfy_core_types()}:
        return registry
    try:
        from midrun.diffusion.runtime import DiffusionRuntime
        from midrun.nodes.comfy_impl import attach
    except ImportError:
        return registry
    runtime = DiffusionRuntime.create(
        args.models_dir,
        device=args.device,
        precision=args.precision,
        output_dir=args.output_dir,
        input_dir=args.input_dir or "input",
        extra_model_paths=args.extra_model_paths,
    )
    return attach(registry, runtime)


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
            workflow_doc = state.plan.get("workflow", {}) if state.kind == "workflow" else {}
            types = {n.get("class_type") for n in workflow_doc.values() if isinstance(n, dict)}
            registry = _with_diffusion(registry, types, args)
            coro = executor.resume(state, registry, context=context)
        else:
            workflow = read_workflow_file(args.file, registry)
            types = {spec.class_type for spec in workflow.nodes.values()}
            registry = _with_diffusion(registry, types, args)
            coro = executor.run(workflow, registry, context=context)
        result = asyncio.run(coro)
    except MidrunError as exc:
        _print_json({"status": "failed", "error": exc.to_dict()})
        return 1
    return _report(result, Path(args.state) if args.state else None)


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(args, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    return _execute(args, resume=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from midrun.cli.demo import run_demo

    return run_demo(Path(args.data_dir))


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
            name, help=f"{name} a workflow" if name == "run" else "resume a saved run"
        )
        p.add_argument("state_dir" if name == "resume" else "file")
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
        p.set_defaults(fn=fn)

    p = sub.add_parser("demo", help="run the example pipeline with a mid-run pause")
    p.add_argument("--data-dir", default=os.environ.get("MIDRUN_DATA_DIR", "data"))
    p.set_defaults(fn=cmd_demo)
    return parser


def example_path(name: str) -> Path:
    return Path(str(resources.files("midrun") / "examples" / name))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
