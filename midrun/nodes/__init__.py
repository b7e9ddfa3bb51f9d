"""Node types. ``builtin_registry()`` is the set midrun ships."""

from __future__ import annotations

from pathlib import Path

from midrun.graph.registry import NodeRegistry
from midrun.nodes.life import life_types
from midrun.nodes.primitives import primitive_types

#: Dynamic COMBO lists and the models-directory folders they list (ComfyUI's layout).
MODEL_FOLDERS = {"checkpoints": "checkpoints", "loras": "loras", "vae": "vae"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def builtin_registry(
    models_dir: str | Path | None = None, input_dir: str | Path | None = None
) -> NodeRegistry:
    """Every node type midrun ships, with file lists read from ``models_dir``/``input_dir``."""
    from midrun.diffusion.paths import ModelPaths  # torch-free
    from midrun.nodes.comfy_core import comfy_core_types

    registry = NodeRegistry([*primitive_types(), *life_types(), *comfy_core_types()])
    paths = ModelPaths.from_dir(models_dir)
    for source, kind in MODEL_FOLDERS.items():
        registry.set_choices_source(source, lambda kind=kind: paths.names(kind))
    registry.set_choices_source(
        "input_images", file_lister(Path(input_dir) if input_dir else None, IMAGE_SUFFIXES)
    )
    return registry


def file_lister(folder: Path | None, suffixes: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """A choices provider: files with ``suffixes`` below ``folder``, as relative paths."""

    def files() -> list[str]:
        if folder is None or not folder.is_dir():
            return []
        return sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in suffixes
        )

    return files
