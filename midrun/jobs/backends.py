"""Where a worker runs its jobs: its backend.

A :class:`Backend` is what one worker runs jobs on: the node registry whose
implementations run there and, for generation, that device's own diffusion runtime (its
placement, its model cache). A worker gets its backend from the service when it is made
(``Jobs.backends(device)``, one call per worker) and runs every job it claims on it;
claiming, control, events and recording never look inside. The embedded backend is the
only kind today; a ComfyUI server is the next.

This module is torch-free: the diffusion layer is imported only when a backend with a
runtime releases memory or one is made per device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from midrun.graph.registry import NodeRegistry


@dataclass(eq=False)
class Backend:
    """midrun's own executor on one device. ``runtime`` (a ``DiffusionRuntime``) is None
    where torch is not installed: StateGraph jobs and torch-free nodes still run."""

    device: str
    registry: NodeRegistry
    runtime: Any = None

    @property
    def generates(self) -> bool:
        """Whether diffusion nodes run here (previews, decoding an aborted sampler)."""
        return self.runtime is not None

    def held_bytes(self, live: Any) -> int:
        """Bytes of ``live`` (a run's in-flight step states) on this backend's device."""
        if self.runtime is None or not live:
            return 0
        from midrun.diffusion.memory import tensor_bytes

        return tensor_bytes(live, getattr(self.runtime.placement.device, "type", None))

    def release(self) -> None:
        """Return the device memory freed since (drop the run's tensors first; models
        stay cached)."""
        if self.runtime is None:
            return
        from midrun.diffusion.memory import release

        release(self.runtime.placement.device)


BackendFactory = Callable[[str], Backend]


def shared(registry: NodeRegistry, runtime: Any = None) -> BackendFactory:
    """Every worker on one registry and one runtime, whatever its device label (the
    single-runtime path: ``Jobs(runtime=...)`` in tests and benches)."""
    return lambda device: Backend(device, registry, runtime)


def per_device(registry: NodeRegistry, make_runtime: Callable[[str], Any]) -> BackendFactory:
    """Each worker its own runtime, ``make_runtime(device)``, and its own copy of
    ``registry`` whose ComfyUI node implementations run on that runtime. Two workers on
    one label (``cpu`` twice) get two runtimes, each with its own model cache."""

    def make(device: str) -> Backend:
        from midrun.nodes.comfy_impl import attach

        runtime = make_runtime(device)
        return Backend(device, attach(registry.merged(NodeRegistry()), runtime), runtime)

    return make
