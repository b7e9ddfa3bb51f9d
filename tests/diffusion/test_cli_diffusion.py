"""``midrun run`` / ``midrun resume`` on a ComfyUI text-to-image workflow: stopped inside
the KSampler in one process, resumed in another, the same PNG as a straight run."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.diffusion.conftest import txt2img
from tests.test_cli import midrun


def test_run_stop_resume_txt2img(models, tmp_path: Path) -> None:
    workflow = tmp_path / "txt2img.json"
    workflow.write_text(json.dumps(txt2img(steps=5)), "utf-8")
    common = ["--models-dir", str(models.models_dir), "--device", "cpu"]
    straight = midrun("run", str(workflow), "--output-dir", str(tmp_path / "a"), *common)
    assert straight.returncode == 0, straight.stderr
    assert "[3 KSampler] step 5/5" in straight.stderr
    state = tmp_path / "paused"
    first = midrun(
        "run", str(workflow), "--quiet", "--stop-at", "3:2", "--state", str(state),
        "--output-dir", str(tmp_path / "b"), *common,
    )  # fmt: skip
    assert first.returncode == 0 and "suspended" in first.stderr, first.stderr
    second = midrun("resume", str(state), "--output-dir", str(tmp_path / "b"), *common)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["status"] == "completed"
    with (
        Image.open(tmp_path / "a" / "midrun_00001_.png") as a,
        Image.open(tmp_path / "b" / "midrun_00001_.png") as b,
    ):
        assert a.tobytes() == b.tobytes()
        assert json.loads(b.text["prompt"])["3"]["inputs"]["steps"] == 5


def test_unknown_checkpoint_is_a_validation_error(models, tmp_path: Path) -> None:
    workflow = tmp_path / "bad.json"
    workflow.write_text(json.dumps(txt2img("nope.safetensors")), "utf-8")
    out = midrun("run", str(workflow), "--models-dir", str(models.models_dir), "--quiet")
    assert out.returncode == 1
    assert "nope.safetensors" in out.stdout and "value_not_in_list" in out.stdout
