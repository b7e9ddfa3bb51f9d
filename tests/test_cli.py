"""The ``midrun`` command line: validate, params, run/resume across processes, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIFE = ROOT / "midrun" / "examples" / "life.json"


def midrun(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midrun.cli.main", *args], cwd=cwd, capture_output=True, text=True
    )


def test_validate_ok_exits_zero() -> None:
    out = midrun("validate", str(LIFE))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True, "outputs": ["4"], "nodes": 4}


def test_validate_invalid_exits_one_with_node_errors(tmp_path: Path) -> None:
    doc = json.loads(LIFE.read_text())
    doc["1"]["inputs"]["width"] = 1
    del doc["2"]["inputs"]["generations"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    out = midrun("validate", str(bad))
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert report["node_errors"]["2"]["errors"][0]["type"] == "required_input_missing"
    assert report["node_errors"]["1"]["dependent_outputs"] == ["4"]


def test_validate_reports_unknown_types_and_bad_json(tmp_path: Path) -> None:
    ui = {"nodes": [{"id": 1, "type": "NoSuchNode", "inputs": [], "outputs": []}], "links": []}
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(ui))
    out = midrun("validate", str(path))
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"]["extra_info"]["class_types"] == ["NoSuchNode"]
    path.write_text("{oops")
    out = midrun("validate", str(path))
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["type"] == "invalid_workflow"


def test_params_prints_parameters() -> None:
    out = midrun("params", str(LIFE))
    assert out.returncode == 0
    params = {f"{p['node_id']}.{p['field']}": p for p in json.loads(out.stdout)}
    assert params["1.seed"]["type"] == "seed" and params["1.seed"]["value"] == 2026
    assert params["2.generations"]["hot"] is True


def test_run_stop_and_resume_in_another_process(tmp_path: Path) -> None:
    straight = midrun("run", str(LIFE), "--quiet", "--output-dir", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr
    expected = json.loads(straight.stdout)["outputs"]["4"]["text"]

    state = tmp_path / "paused"
    first = midrun(
        "run",
        str(LIFE),
        "--quiet",
        "--stop-at",
        "2:17",
        "--state",
        str(state),
        "--output-dir",
        str(tmp_path / "b"),
    )
    assert first.returncode == 0 and "suspended" in first.stderr
    assert (state / "run.json").exists()
    second = midrun("resume", str(state), "--output-dir", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["status"] == "completed"
    assert report["outputs"]["4"]["text"] == expected
    assert "[2 LifeSimulate] step 60/60" in second.stderr
    assert (tmp_path / "b" / "life_00001.txt").read_text().rstrip("\n") == expected[0]


def test_demo_generates_pauses_edits_and_resumes_on_the_shipped_model(tmp_path: Path) -> None:
    from midrun.demo_model import weights

    assert weights() is not None, "the demo model's weights are package data"
    out = midrun("demo", "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "paused at step 8/20" in out.stderr
    assert "step 20/20" in out.stderr
    assert "the checker sees a blue" in out.stderr
    assert "identical to an uninterrupted run: yes" in out.stderr
    assert list((tmp_path / "runs").iterdir())
    assert list((tmp_path / "output").glob("midrun-demo_*.png"))


def test_life_demo_pauses_resumes_and_matches(tmp_path: Path, capsys) -> None:
    from midrun.cli.demo import run_life_demo

    assert run_life_demo(tmp_path) == 0
    captured = capsys.readouterr()
    assert "identical to an uninterrupted run: yes" in captured.err
    assert list((tmp_path / "runs").iterdir())
    assert (tmp_path / "output" / "life_00001.txt").exists()
    assert "█" in captured.out
