"""A runtime per device, LoRA strengths per job: two workers in one process, each on its
own backend (runtime, placement, model cache, registry), run two jobs at the same time
with different LoRA strengths on one checkpoint, and each image equals its solo run. The
same holds when both workers share one runtime, so one cached base model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from midrun.diffusion.previews import PreviewSettings
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.jobs.backends import per_device
from midrun.jobs.service import Jobs
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool
from midrun.nodes import builtin_registry
from midrun.nodes.comfy_impl import attach
from tests.diffusion.conftest import LORAS, SD15_CKPT, models, txt2img  # noqa: F401
from tests.jobs.conftest import FAST
from tests.jobs.test_generation_jobs import image

WAIT = 120  # seconds; only a guard against a hang, never a synchronisation


def lora_job(strength: float, steps: int = 4) -> dict[str, Any]:
    """txt2img with a LoraLoader on the model and the text encoder."""
    workflow = txt2img(steps=steps)
    workflow["10"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": LORAS["kohya"],
        "strength_model": strength, "strength_clip": strength}}  # fmt: skip
    workflow["3"]["inputs"]["model"] = ["10", 0]
    workflow["6"]["inputs"]["clip"] = ["10", 1]
    workflow["7"]["inputs"]["clip"] = ["10", 1]
    return workflow


def runtimes(models, tmp_path: Path) -> Callable[[str], DiffusionRuntime]:  # noqa: F811
    def make(device: str) -> DiffusionRuntime:
        return DiffusionRuntime.create(models.models_dir, device=device,
                                       output_dir=tmp_path / "output",
                                       input_dir=tmp_path / "input")  # fmt: skip

    return make


def service_on(db, tmp_path: Path, **kwargs: Any) -> Jobs:
    return Jobs(db, kwargs.pop("registry"), data_dir=tmp_path, output_dir=tmp_path / "output",
                settings=FAST, preview_settings=PreviewSettings(method="latent2rgb"),
                **kwargs)  # fmt: skip


@contextmanager
def in_step(unets: list[Any]) -> Iterator[list[tuple[str, int]]]:
    """Every UNet call (of either job) waits inside the UNet for a call of the other job:
    while this holds, the two jobs' model calls run at the same time, pairwise. Yields
    (thread name, UNet id) of each call that met there."""
    barrier = threading.Barrier(2, timeout=WAIT)
    calls: list[tuple[str, int]] = []

    def meet(module: Any, _args: Any) -> None:
        calls.append((threading.current_thread().name, id(module)))
        barrier.wait()

    handles = [unet.register_forward_pre_hook(meet) for unet in {id(u): u for u in unets}.values()]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
        barrier.abort()  # a job still waiting fails instead of hanging


def solo_and_together(service: Jobs, pool: WorkerPool, unets: list[Any]) -> list[tuple[str, int]]:
    """Each job alone, then both at once (meeting at every model call): the same images."""
    weak, strong = lora_job(0.4), lora_job(1.6)
    solo = {}
    for name, workflow in (("weak", weak), ("strong", strong)):
        job = service.wait(service.submit(workflow).id, timeout=WAIT)
        assert job.state == JobState.COMPLETED, job.error
        solo[name] = image(service, job)
    assert not np.array_equal(solo["weak"], solo["strong"])  # the strength shows
    with in_step(unets) as calls:
        a, b = service.submit(weak), service.submit(strong)
        done = {"weak": service.wait(a.id, timeout=WAIT),
                "strong": service.wait(b.id, timeout=WAIT)}  # fmt: skip
    for name, job in done.items():
        assert job.state == JobState.COMPLETED, job.error
        assert np.array_equal(image(service, job), solo[name]), f"the {name} job's image"
    # They met at every model call: both worker threads, the same number of calls each.
    threads = [t for t, _ in calls]
    assert set(threads) == {f"midrun-{w.id}" for w in pool.workers}
    assert threads.count(threads[0]) * 2 == len(threads) > 0
    return calls


def test_two_workers_on_two_runtimes_run_two_lora_strengths_at_once(db, tmp_path, models) -> None:  # noqa: F811
    registry = builtin_registry(models.models_dir)
    service = service_on(db, tmp_path, registry=registry,
                         backends=per_device(registry, runtimes(models, tmp_path)))  # fmt: skip
    with WorkerPool(service, ["cpu", "cpu"]) as pool:
        backends = [w.backend for w in pool.workers]
        # Loaded up front so that the test can meet the jobs inside each worker's UNet.
        unets = [b.runtime.checkpoint(SD15_CKPT).components.unet for b in backends]
        assert unets[0] is not unets[1]
        calls = solo_and_together(service, pool, unets)
        for worker, unet in zip(pool.workers, unets, strict=True):  # each on its own model
            assert {t for t, u in calls if u == id(unet)} == {f"midrun-{worker.id}"}
    for backend in backends:  # each worker loaded the checkpoint and the LoRA itself
        assert backend.runtime.cache.snapshot().entries == 2


def test_two_workers_sharing_one_runtime_run_two_lora_strengths_at_once(
    db,
    tmp_path,
    models,  # noqa: F811
) -> None:
    # One cached base model for both jobs: the strengths must be each call's, not the model's.
    runtime = runtimes(models, tmp_path)("cpu")
    registry = attach(builtin_registry(models.models_dir), runtime)
    service = service_on(db, tmp_path, registry=registry, runtime=runtime)
    with WorkerPool(service, ["cpu", "cpu"]) as pool:
        assert all(w.backend.runtime is runtime for w in pool.workers)
        unet = runtime.checkpoint(SD15_CKPT).components.unet
        solo_and_together(service, pool, [unet])
    assert runtime.cache.snapshot().entries == 2


def test_each_worker_gets_its_own_runtime_cache_placement_and_registry(
    db,
    tmp_path,
    models,  # noqa: F811
) -> None:
    registry = builtin_registry(models.models_dir)
    service = service_on(db, tmp_path, registry=registry,
                         backends=per_device(registry, runtimes(models, tmp_path)))  # fmt: skip
    first, second = (w.backend for w in WorkerPool(service, ["cpu", "cpu"]).workers)
    assert (first.device, second.device) == ("cpu", "cpu")
    assert first.runtime is not second.runtime
    assert first.runtime.cache is not second.runtime.cache
    assert first.runtime.placement is not second.runtime.placement
    assert first.registry is not second.registry and first.registry is not registry
    # A worker's nodes load into its own cache only; the service's registry (validation,
    # /object_info) keeps bare declarations and the same node types.
    loader = first.registry["CheckpointLoaderSimple"].impl
    model, _, _ = loader(SD15_CKPT)
    assert model.base.placement is first.runtime.placement
    assert first.runtime.cache.snapshot().entries == 1
    assert second.runtime.cache.snapshot().entries == 0
    assert registry["CheckpointLoaderSimple"].impl is None
    assert {t.class_type for t in first.registry} == {t.class_type for t in registry}
    assert registry.object_info() == first.registry.object_info()


def test_serve_with_two_devices_builds_a_runtime_each(tmp_path, models) -> None:  # noqa: F811
    from midrun.cli.main import build_parser
    from midrun.cli.serve import server_config
    from midrun.server.state import Server

    args = build_parser().parse_args(["serve", "--device", "cpu", "--device", "cpu",
                                      "--data-dir", str(tmp_path / "data"),
                                      "--models-dir", str(models.models_dir)])  # fmt: skip
    server = Server(server_config(args))
    try:
        first, second = server.backends
        assert first.runtime is server.runtime  # the first device's also serves validation
        assert second.runtime is not first.runtime
        assert second.runtime.cache is not first.runtime.cache
        assert server.jobs.registry is server.registry
        for backend in (first, second):
            backend.registry["CheckpointLoaderSimple"].impl(SD15_CKPT)
            assert backend.runtime.cache.snapshot().entries == 1
        server.free_memory()  # ComfyUI's /free reaches every worker's cache
        assert [b.runtime.cache.snapshot().entries for b in (first, second)] == [0, 0]
    finally:
        server.db.dispose()
