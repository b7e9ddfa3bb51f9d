"""The server's parts, built once from a :class:`ServerConfig`: the database, the node
registry (with the diffusion runtime when torch is installed), the job service, the
workers (one per device, each on its own backend: its own diffusion runtime, placement and
model cache), the users and the event hub. Routes reach them as
``request.app.state.server``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from midrun.jobs.backends import Backend, per_device
from midrun.jobs.service import Jobs
from midrun.jobs.settings import JobSettings
from midrun.jobs.worker import WorkerPool
from midrun.nodes import builtin_registry
from midrun.server.auth import Users
from midrun.server.config import ServerConfig
from midrun.store.database import Database

log = logging.getLogger(__name__)


class Server:
    """``runtime``: one diffusion runtime every worker shares (tests); without it each
    worker gets its own, made for its device, and the first device's also serves
    validation, ``/object_info`` and the model lists."""

    def __init__(self, config: ServerConfig, *, settings: JobSettings | None = None,
                 graphs: dict[str, Any] | None = None, runtime: Any = None) -> None:  # fmt: skip
        from midrun.server.hub import Hub

        self.config = config
        for folder in (config.data_dir, config.output_dir, config.upload_dir, config.temp_dir,
                       config.user_dir):  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True)
        self.models_dir = config.models_dir or config.data_dir / "models"
        self.db = Database.open(config.database_url, data_dir=config.data_dir)
        self.runtime = runtime if runtime is not None else self._runtime()
        registry = builtin_registry(self.models_dir, config.upload_dir)
        if self.runtime is not None:
            from midrun.nodes.comfy_impl import attach

            registry = attach(registry, self.runtime)
        self.registry = registry
        preview_settings = None
        backends = None
        if self.runtime is not None:
            from midrun.diffusion.previews import PreviewSettings

            preview_settings = PreviewSettings()
            if runtime is None:
                backends = per_device(registry, self._worker_runtime([self.runtime]))
        self.jobs = Jobs(self.db, registry, data_dir=config.data_dir,
                         output_dir=config.output_dir, settings=settings, graphs=graphs,
                         runtime=self.runtime, preview_settings=preview_settings,
                         backends=backends)  # fmt: skip
        self.users = Users(config.data_dir / "auth" / "users.json")
        self.hub = Hub(self)
        devices = self._devices()
        self.pool = WorkerPool(self.jobs, devices) if config.workers else None

    def _runtime(self, device: str | None = None) -> Any:
        try:
            from midrun.diffusion.runtime import DiffusionRuntime
        except ImportError:  # torch is an extra: StateGraph jobs still run
            log.info("torch is not installed: generation nodes are declared but cannot run")
            return None
        if device is None:
            device = self.config.devices[0] if self.config.devices else "auto"
        return DiffusionRuntime.create(self.models_dir, device=device,
                                       output_dir=self.config.output_dir,
                                       input_dir=self.config.upload_dir,
                                       temp_dir=self.config.temp_dir)  # fmt: skip

    def _worker_runtime(self, spare: list[Any]) -> Callable[[str], Any]:
        """Each worker's runtime: the first worker (the first device) takes the one made
        for validation, every other a new one for its device (``cpu`` twice: two)."""
        return lambda device: spare.pop() if spare else self._runtime(device)

    @property
    def backends(self) -> list[Backend]:
        """The workers' backends, in device order."""
        return [w.backend for w in self.pool.workers] if self.pool is not None else []

    def free_memory(self) -> None:
        """ComfyUI's ``/free``: every runtime's cached models dropped, device memory back."""
        from midrun.diffusion.memory import release

        runtimes = [self.runtime, *(b.runtime for b in self.backends)]
        for runtime in {id(r): r for r in runtimes if r is not None}.values():
            runtime.cache.clear()
            release(runtime.placement.device)

    def _devices(self) -> list[str]:
        if self.runtime is not None:
            label = str(getattr(self.runtime.placement, "device", "cpu"))
            return [label if d == "auto" else d for d in self.config.devices]
        return ["cpu" if d == "auto" else d for d in self.config.devices]

    async def start(self) -> None:
        await self.hub.start()
        if self.pool is not None:
            self.pool.start()

    async def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        await self.hub.stop()
        self.db.dispose()
