"""How fast mid-run control answers, on the tiny SD1.5 checkpoint on this machine's CPU.

* pause_p50_ms / pause_p99_ms: ``pause()`` called on a running KSampler job -> the job is
  paused (checkpoint written, worker free). Includes waiting for the step in flight.
* step_ms: the median sampler step of those jobs, for scale.
* resume_ms: ``resume()`` -> the job's next step done on a worker (claim, checkpoint
  load, model rebind and one step).
* global_pause_ms: ``pause_pipeline()`` with 4 jobs running on 4 workers, until every one
  is paused (worst of the trials).
* edit_apply_ms: a cfg edit on a running job -> applied at the next control point.
* released_per_pause_mb: the device memory a pause gave back (the sampler's tensors; the
  models stay cached), median.
* enqueue_per_s: validated txt2img submissions per second (one transaction each), from
  one client; enqueue_concurrent_per_s: the same from 8 client threads (PostgreSQL commits
  concurrent transactions together, so its fsync-bound single-client rate rises).

    python bench/control_latency.py --json [--database postgresql://...] [--device cuda:0]
        [--size 512]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from report import emit, percentile  # bench/report.py (benchmarks run as scripts)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midrun.diffusion import testing
from midrun.diffusion.families import SD15
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.jobs import pipeline
from midrun.jobs.service import Jobs
from midrun.jobs.settings import JobSettings
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool
from midrun.nodes import builtin_registry
from midrun.nodes.comfy_impl import attach
from midrun.store.database import Database
from tests.diffusion.conftest import txt2img


class Clock:
    """Timestamps of bus events, waited on by kind and job."""

    def __init__(self, service: Jobs) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        service.bus.subscribe(self._on)

    def _on(self, event: dict[str, Any]) -> None:
        with self.cond:
            self.events.append((time.perf_counter(), event))
            self.cond.notify_all()

    def wait(self, kind: str, job_id: str, after: float, pred: Any = None) -> float:
        with self.cond:
            while True:
                for at, e in self.events:
                    match = e["type"] == f"midrun.{kind}" and e.get("job_id") == job_id
                    if match and at >= after and (pred is None or pred(e)):
                        return at
                if not self.cond.wait(30):
                    raise TimeoutError(f"no {kind} for {job_id}")

    def steps(self, job_id: str) -> list[float]:
        return [at for at, e in self.events
                if e["type"] == "midrun.progress" and e.get("job_id") == job_id]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--database", default=None)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--enqueue", type=int, default=2000)
    parser.add_argument("--device", default="cpu", help="where the 4 workers run (cuda:0 ...)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="midrun-bench-"))
    testing.write_single_file(root / "models" / "checkpoints" / "tiny_sd15.safetensors", SD15)
    runtime = DiffusionRuntime.create(root / "models", device=args.device,
                                      output_dir=root / "output")  # fmt: skip
    registry = attach(builtin_registry(root / "models"), runtime)
    db = Database.open(args.database, data_dir=root / "data")
    settings = JobSettings(poll_interval=0.05, checkpoint_every_seconds=0)
    service = Jobs(db, registry, data_dir=root / "data", runtime=runtime, settings=settings)
    clock = Clock(service)
    workflow = txt2img(steps=10_000, size=args.size)
    figures: dict[str, Any] = {}
    with WorkerPool(service, [args.device] * 4):
        pauses, resumes, edits, released = [], [], [], []
        for _ in range(args.trials):
            job = service.submit(workflow)
            clock.wait("progress", job.id, 0, lambda e: e["step"] >= 3)
            start = time.perf_counter()
            service.pause(job.id)
            pauses.append(clock.wait("paused", job.id, start) - start)
            start = time.perf_counter()
            service.resume(job.id)
            resumes.append(clock.wait("progress", job.id, start) - start)
            start = time.perf_counter()
            service.edit(job.id, "3", "cfg", 5.5)
            edits.append(clock.wait("edit_applied", job.id, start) - start)
            service.abort(job.id, "bench")
            service.wait(job.id)
            released += [e["data"].get("released_bytes", 0) for e in service.events(job.id)
                         if e["kind"] == "paused"]  # fmt: skip
        queued = [e["job_id"] for _, e in clock.events if e["type"] == "midrun.queued"]
        steps = [b - a for j in queued for a, b in itertools.pairwise(clock.steps(j))]
        globals_ = []
        for _ in range(5):
            running = [service.submit(workflow) for _ in range(4)]
            for job in running:
                clock.wait("progress", job.id, 0, lambda e: e["step"] >= 2)
            start = time.perf_counter()
            status = pipeline.pause_pipeline(service)
            globals_.append(time.perf_counter() - start)
            assert sorted(status["paused_jobs"]) == sorted(j.id for j in running)
            pipeline.resume_pipeline(service)
            for job in running:
                service.abort(job.id, "bench")
                service.wait(job.id)
        pipeline.pause_pipeline(service)  # keep workers off the enqueued jobs
        start = time.perf_counter()
        for _ in range(args.enqueue):
            service.submit(workflow)
        enqueue = args.enqueue / (time.perf_counter() - start)
        clients = [threading.Thread(target=lambda: [service.submit(workflow)
                                                    for _ in range(args.enqueue // 8)])
                   for _ in range(8)]  # fmt: skip
        start = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        enqueue_concurrent = 8 * (args.enqueue // 8) / (time.perf_counter() - start)
        for job in service.list(states=[JobState.QUEUED]):
            service.abort(job.id, "bench")
        pipeline.resume_pipeline(service)
    ms = 1000.0
    figures.update(
        pause_p50_ms=round(percentile(pauses, 0.5) * ms, 1),
        pause_p99_ms=round(percentile(pauses, 0.99) * ms, 1),
        resume_ms=round(statistics.median(resumes) * ms, 1),
        global_pause_ms=round(max(globals_) * ms, 1),
        edit_apply_ms=round(statistics.median(edits) * ms, 1),
        enqueue_per_s=round(enqueue),
        enqueue_concurrent_per_s=round(enqueue_concurrent),
        step_ms=round(statistics.median(steps) * ms, 1),
        released_per_pause_mb=round(statistics.median(released) / 2**20, 3),
        device=args.device,
        size=args.size,
        database=db.dialect,
        trials=args.trials,
    )
    emit(figures, args.json)


if __name__ == "__main__":
    main()
