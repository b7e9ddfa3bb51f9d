"""A registry with the diffusion runtime attached, when a workflow needs it."""

from __future__ import annotations

from pathlib import Path

from midrun.graph.registry import NodeRegistry


def with_runtime(registry: NodeRegistry, class_types: set[str], models_dir: str | Path | None,
                 **runtime_options: object) -> NodeRegistry:
    """``registry`` with the diffusion runtime attached when ``class_types`` use ComfyUI's
    core nodes (torch is imported only then; without the ``diffusion`` extra those nodes
    stay unimplemented and a run is refused with a clear error). ``runtime_options`` go
    to :meth:`DiffusionRuntime.create` (device, precision, output_dir, input_dir, ...)."""
    from midrun.nodes.comfy_core import comfy_core_types

    if not class_types & {t.class_type for t in comfy_core_types()}:
        return registry
    try:
        from midrun.diffusion.runtime import DiffusionRuntime
        from midrun.nodes.comfy_impl import attach
    except ImportError:
        return registry
    runtime = DiffusionRuntime.create(models_dir, **runtime_options)  # type: ignore[arg-type]
    return attach(registry, runtime)
