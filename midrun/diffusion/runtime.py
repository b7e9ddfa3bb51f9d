"""What diffusion nodes share on one worker: model paths, the device placement, the
model cache, and the input / output / temp folders."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midrun.diffusion.checkpoints import load_components, load_vae_file
from midrun.diffusion.devices import Placement, placement
from midrun.diffusion.families import SD15, Family
from midrun.diffusion.lora import LoraWeights, load_lora
from midrun.diffusion.model_cache import ModelCache
from midrun.diffusion.models import LoadedModel, VAEModel
from midrun.diffusion.paths import ModelPaths


def place(module: Any, device: Any, dtype: Any) -> Any:
    """Move a module; pass a dtype only when it changes (diffusers warns otherwise)."""
    current = next(module.parameters()).dtype
    return module.to(device) if current == dtype else module.to(device, dtype)


def _module_bytes(*modules: Any) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@dataclass(eq=False)
class DiffusionRuntime:
    paths: ModelPaths
    placement: Placement = field(default_factory=placement)
    cache: ModelCache = field(default_factory=ModelCache)
    output_dir: Path = field(default_factory=lambda: Path("output"))
    input_dir: Path = field(default_factory=lambda: Path("input"))
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "midrun")

    @classmethod
    def create(
        cls,
        models_dir: str | Path | None,
        *,
        device: str = "auto",
        precision: str = "auto",
        budget_bytes: int | None = None,
        output_dir: str | Path = "output",
        input_dir: str | Path = "input",
        extra_model_paths: str | Path | None = None,
        temp_dir: str | Path | None = None,
    ) -> DiffusionRuntime:
        """``temp_dir`` is where PreviewImage writes (a server's ``/view?type=temp``
        folder); by default the system's temporary folder's ``midrun``."""
        return cls(
            ModelPaths.from_dir(models_dir, extra_model_paths),
            placement(device, precision),
            ModelCache(budget_bytes),
            Path(output_dir),
            Path(input_dir),
            Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir()) / "midrun",
        )

    def _key(self, kind: str, path: Path) -> tuple[Any, ...]:
        stat = path.stat()
        return (kind, str(path), stat.st_mtime_ns, stat.st_size, self.placement.label)

    def checkpoint(self, name: str) -> LoadedModel:
        path = self.paths.find("checkpoints", name)
        return self.cache.get(
            self._key("checkpoint", path), lambda: self._load_checkpoint(name, path),
            LoadedModel.nbytes,
        )  # fmt: skip

    def _load_checkpoint(self, name: str, path: Path) -> LoadedModel:
        components = load_components(path)
        where = self.placement
        place(components.unet, where.device, where.dtype)
        for encoder in components.text_encoders:
            place(encoder, where.device, where.dtype)
        place(components.vae, where.device, where.vae_dtype)
        return LoadedModel(name, components, where)

    def lora(self, name: str) -> LoraWeights:
        path = self.paths.find("loras", name)
        return self.cache.get(
            self._key("lora", path),
            lambda: load_lora(path),
            lambda w: sum(d.down.nbytes + d.up.nbytes for d in w.deltas.values()),
        )

    def vae(self, name: str, family: Family = SD15) -> VAEModel:
        path = self.paths.find("vae", name)

        def load() -> VAEModel:
            module = load_vae_file(path, family)
            place(module, self.placement.device, self.placement.vae_dtype)
            return VAEModel(module, family, self.placement, name)

        return self.cache.get(self._key("vae", path), load, lambda v: _module_bytes(v.vae))
