"""Generation jobs on a tiny random SD1.5 checkpoint: pause mid-sampler, resume
bit-identical, edit the prompt while paused, previews indexed with retention."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from midrun.diffusion.previews import PreviewSettings
from midrun.jobs.service import Jobs
from midrun.jobs.settings import JobSettings
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool
from tests.diffusion.conftest import diffusion_registry, models, runtime, txt2img  # noqa: F401
from tests.jobs.test_control import wait_step


@pytest.fixture
def gen(db, tmp_path, runtime, diffusion_registry):  # noqa: F811
    service = Jobs(
        db, diffusion_registry, data_dir=tmp_path, output_dir=runtime.output_dir,
        settings=JobSettings(poll_interval=0.01, previews_keep=3), runtime=runtime,
        preview_settings=PreviewSettings(method="latent2rgb"),
    )  # fmt: skip
    with WorkerPool(service):
        yield service


def image(service: Jobs, job) -> np.ndarray:
    files = job.outputs["9"]["images"]
    assert len(files) == 1
    path = service.output_dir / files[0]["subfolder"] / files[0]["filename"]
    return np.asarray(Image.open(path))


def test_a_paused_generation_resumes_bit_identical(gen) -> None:
    straight = gen.wait(gen.submit(txt2img(steps=40, size=64)).id)
    assert straight.state == JobState.COMPLETED, straight.error
    job = gen.submit(txt2img(steps=40, size=64))
    wait_step(gen, job.id, 3)
    gen.pause(job.id)
    paused = gen.wait(job.id, [JobState.PAUSED])
    assert 3 <= paused.checkpoint_step < 40
    event = next(e for e in gen.events(job.id) if e["kind"] == "paused")
    assert event["data"]["released_bytes"] > 0  # the sampler's tensors left the worker
    gen.resume(job.id)
    done = gen.wait(job.id)
    assert np.array_equal(image(gen, done), image(gen, straight))


def test_a_prompt_edit_while_paused_changes_the_rest_of_the_run(gen) -> None:
    straight = gen.wait(gen.submit(txt2img(steps=40)).id)
    job = gen.submit(txt2img(steps=40))
    wait_step(gen, job.id, 3)
    gen.pause(job.id)
    gen.wait(job.id, [JobState.PAUSED])
    gen.edit(job.id, "6", "text", "a blue ring on a black background")
    gen.edit(job.id, "3", "cfg", 3.5)
    modified = gen.debug_state(job.id)["modified_params_json"]
    assert set(modified) == {"6.text", "3.cfg"}
    gen.resume(job.id)
    done = gen.wait(job.id)
    assert done.state == JobState.COMPLETED
    assert not np.array_equal(image(gen, done), image(gen, straight))
    assert done.workflow["6"]["inputs"]["text"] == "a blue ring on a black background"


def test_previews_are_indexed_and_pruned_on_completion(gen) -> None:
    job = gen.wait(gen.submit(txt2img(steps=8)).id)
    index = gen.debug_state(job.id)["intermediate_previews_json"]
    assert [e["step"] for e in index] == [6, 7, 8]  # the last 3 (previews_keep), final last
    assert all(e["method"] == "latent2rgb" and e["mime"] == "image/jpeg" for e in index)
    assert sorted(gen.artifacts.list(f"jobs/{job.id}/previews")) == sorted(
        e["file"] for e in index
    )


def test_an_aborted_generation_keeps_every_preview_and_its_latent(gen) -> None:
    job = gen.submit(txt2img(steps=60))
    wait_step(gen, job.id, 4)
    gen.abort(job.id, "wrong colour")
    done = gen.wait(job.id)
    assert done.state == JobState.ABORTED
    index = gen.debug_state(job.id)["intermediate_previews_json"]
    # Previews are made off the sampling thread and skipped when it falls behind, so
    # not every step has one; none of those made is purged from an aborted job.
    assert index and all(gen.artifacts.path(e["file"]).is_file() for e in index)
    partial = gen.artifacts.load_run_state(job.id)
    assert "3" in partial.plan.in_flight  # the sampler's state, latent included
    key = done.outputs["partial"]["3"]
    decoded = Image.open(gen.artifacts.path(key))
    assert decoded.size == (64, 64)
    assert np.asarray(decoded).std() > 0  # an image, not a blank
