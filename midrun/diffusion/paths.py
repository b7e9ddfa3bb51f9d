"""The models directory, laid out like ComfyUI's (``checkpoints/``, ``loras/``, ``vae/``,
``vae_approx/``), plus the folders an ``extra_model_paths.yaml`` adds."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from midrun.core.errors import MidrunError

KINDS = ("checkpoints", "loras", "vae", "vae_approx")
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")


class ModelNotFound(MidrunError):
    type = "model_not_found"


class ModelPaths:
    """Where each kind of model file is looked for, first folder first."""

    def __init__(
        self,
        folders: Mapping[str, Iterable[str | Path]],
        builtin: Mapping[str, Mapping[str, Path]] | None = None,
    ) -> None:
        self.folders = {kind: [Path(p) for p in folders.get(kind, ())] for kind in KINDS}
        #: Models that ship with midrun (kind -> name -> path), listed after the folders'
        #: own files; a file of the same name in a folder wins.
        self.builtin = {kind: dict(entries) for kind, entries in (builtin or {}).items()}
        #: kind -> (names, the mtime of every folder scanned; None for a missing one)
        self._listed: dict[str, tuple[list[str], dict[str, int | None]]] = {}

    @classmethod
    def from_dir(
        cls, models_dir: str | Path | None, extra_yaml: str | Path | None = None
    ) -> ModelPaths:
        folders: dict[str, list[Path]] = {kind: [] for kind in KINDS}
        if models_dir is not None:
            for kind in KINDS:
                folders[kind].append(Path(models_dir) / kind)
        if extra_yaml is not None:
            for kind, paths in read_extra_model_paths(extra_yaml).items():
                folders.setdefault(kind, []).extend(paths)
        from midrun.demo_model import NAME, weights

        demo = weights()
        return cls(folders, {"checkpoints": {NAME: demo}} if demo is not None else None)

    def names(self, kind: str) -> list[str]:
        """Model names of ``kind``: files with a weights suffix, and for checkpoints also
        diffusers folders (a directory with ``model_index.json``). Listings are cached
        until a scanned folder's mtime changes (every validation asks for them)."""
        cached = self._listed.get(kind)
        if cached is not None and all(_mtime(d) == m for d, m in cached[1].items()):
            return list(cached[0])
        found: dict[str, None] = {}
        seen: dict[str, int | None] = {}
        for folder in self.folders.get(kind, []):
            seen[str(folder)] = _mtime(str(folder))
            if not folder.is_dir():
                continue
            visited: set[str] = set()
            for root, dirs, files in os.walk(folder, followlinks=True):
                here = Path(root)
                real = os.path.realpath(root)
                if real in visited:  # a link cycle
                    dirs[:] = []
                    continue
                visited.add(real)
                seen[root] = _mtime(root)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if kind == "checkpoints" and (here / "model_index.json").is_file():
                    found.setdefault(here.relative_to(folder).as_posix(), None)
                    dirs[:] = []  # a diffusers folder is one model
                    continue
                for name in sorted(files):
                    if Path(name).suffix.lower() in WEIGHT_SUFFIXES and not name.startswith("."):
                        found.setdefault((here / name).relative_to(folder).as_posix(), None)
        for name in self.builtin.get(kind, {}):
            found.setdefault(name, None)
        self._listed[kind] = (list(found), seen)
        return list(found)

    def find(self, kind: str, name: str) -> Path:
        """The file for ``name``; names that leave their folder are refused."""
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelNotFound(f"{kind} name {name!r} must be a path inside the {kind} folder")
        for folder in self.folders.get(kind, []):
            # Checked lexically: the name cannot climb out (no "..", not absolute), while
            # links the owner placed inside a models folder (as ComfyUI users do) still work.
            candidate = folder / name
            if candidate.exists():
                return candidate
        if name in self.builtin.get(kind, {}):
            return self.builtin[kind][name]
        where = ", ".join(str(f) for f in self.folders.get(kind, [])) or "(no folder configured)"
        raise ModelNotFound(f"{kind} {name!r} not found in {where}", kind=kind, name=name)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def read_extra_model_paths(path: str | Path) -> dict[str, list[Path]]:
    """ComfyUI's ``extra_model_paths.yaml``: sections with an optional ``base_path`` and
    one or more folders (newline-separated) per model kind."""
    import yaml

    source = Path(path)
    data: Any = yaml.safe_load(source.read_text("utf-8")) or {}
    result: dict[str, list[Path]] = {}
    for section in data.values() if isinstance(data, dict) else []:
        if not isinstance(section, dict):
            continue
        base = Path(str(section.get("base_path", ""))).expanduser()
        if not base.is_absolute():
            base = source.parent / base
        for kind, value in section.items():
            if kind in ("base_path", "is_default") or not isinstance(value, str):
                continue
            for line in value.splitlines():
                line = line.strip()
                if line:
                    folder = Path(line).expanduser()
                    result.setdefault(kind, []).append(
                        folder if folder.is_absolute() else base / folder
                    )
    return result
