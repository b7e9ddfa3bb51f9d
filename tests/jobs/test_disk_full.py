"""A full disk under running jobs (SQLite and PostgreSQL; the job's files on a small real
tmpfs): a node whose write finds the disk full pauses its job there, with the reason, and
the job completes once space returns; a job whose checkpoint does not fit either fails
with ``insufficient_storage``; the worker goes on either way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from midrun.jobs.service import Jobs
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool
from tests import disks, testnodes
from tests.jobs.conftest import FAST

OUTPUT = 2 << 20  # what the job's last node writes: more than the disk has left


def taped(size: int = OUTPUT) -> dict[str, Any]:
    return {
        "1": {"class_type": "Tape", "inputs": {"steps": 6}},
        "2": {"class_type": "Output", "inputs": {"value": ["1", 0], "label": "length"}},
        "3": {"class_type": "SaveBytes", "inputs": {"value": ["1", 1], "size": size}},
    }


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with disks.small_disk(tmp_path, 8) as mount:
        yield mount


@pytest.fixture
def on_disk(db, disk: Path) -> Jobs:
    testnodes.reset()
    return Jobs(db, testnodes.registry(), data_dir=disk / "data", settings=FAST)


def test_a_write_that_finds_the_disk_full_pauses_the_job_until_space_returns(
    on_disk: Jobs, disk: Path
) -> None:
    (disk / "data").mkdir(exist_ok=True)
    filler = disks.fill(disk, leave=256 << 10)  # room for a checkpoint, not for the output
    job = on_disk.submit(taped())
    with WorkerPool(on_disk, ["cpu"]):
        stopped = on_disk.wait(job.id, [JobState.PAUSED, JobState.FAILED, JobState.COMPLETED])
        assert stopped.state == JobState.PAUSED and stopped.paused_by == "disk_full"
        pausing = [e for e in on_disk.events(job.id) if e["kind"] == "pausing"]
        assert pausing[-1]["data"]["by"] == "disk_full" and pausing[-1]["node_id"] == "3"
        assert "No space left" in pausing[-1]["data"]["error"]
        filler.unlink()  # space returns
        on_disk.resume(job.id)
        done = on_disk.wait(job.id)
    assert done.state == JobState.COMPLETED, done.error
    assert done.outputs["2"]["value"] == [384]
    written = on_disk.output_dir / f"bytes_{job.id}.bin"
    assert written.stat().st_size == OUTPUT
    kinds = [e["kind"] for e in on_disk.events(job.id)]
    assert kinds == ["queued", "running", "pausing", "paused", "resumed", "running",
                     "completed"]  # fmt: skip


def test_a_job_whose_checkpoint_does_not_fit_fails_and_the_worker_goes_on(
    on_disk: Jobs, disk: Path
) -> None:
    (disk / "data" / "artifacts").mkdir(parents=True, exist_ok=True)
    filler = disks.fill(disk)  # not a byte left
    job = on_disk.submit(taped())
    with WorkerPool(on_disk, ["cpu"]):
        failed = on_disk.wait(job.id)
        assert failed.state == JobState.FAILED and failed.worker_id is None
        assert failed.error["type"] == "insufficient_storage", failed.error
        assert "could not be saved" in failed.error["message"]
        filler.unlink()
        after = on_disk.wait(on_disk.submit(taped(size=1024)).id)
    assert after.state == JobState.COMPLETED and after.outputs["2"]["value"] == [384]


def test_save_image_leaves_no_half_written_files_on_a_full_disk(disk: Path) -> None:
    import torch

    from midrun.nodes.comfy_impl import _write_images

    out = disk / "output"
    out.mkdir()
    noise = torch.rand(3, 256, 256, 3, generator=torch.Generator().manual_seed(1))
    disks.fill(disk, leave=300 << 10)  # room for about one of the three PNGs
    with pytest.raises(OSError):
        _write_images(noise, out, "ComfyUI", "output", None, None, 0)
    assert list(out.iterdir()) == []
