"""A full disk under a real server: its data directory on a small tmpfs, filled to the
last byte. Requests that must write answer 507 ``insufficient_storage`` (JSON, never a
plain-text 500) and leave nothing half-written; once space returns the same requests
succeed and the database is intact."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import disks
from tests.server.conftest import LiveServer, make_config, start_server, txt2img

SIZE_MB = 24


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with disks.small_disk(tmp_path, SIZE_MB) as mount:
        yield mount


fill = disks.fill


@pytest.fixture
def server(small_disk: Path, tmp_path: Path) -> Iterator[LiveServer]:
    # no workers: the jobs stay queued, so what is on the disk changes only by requests
    config = make_config(tmp_path / "root", data_dir=small_disk / "data", workers=False)
    live = start_server(config)
    yield live
    live.stop()


def big_prompt() -> dict:
    return {"prompt": txt2img(steps=1), "extra_data": {"note": "n" * 400_000}}


def test_requests_that_must_write_answer_507_and_work_once_space_returns(
    server: LiveServer, small_disk: Path
) -> None:
    with server.client() as http:
        before = http.post("/prompt", json={"prompt": txt2img(steps=1)}).json()["prompt_id"]
        assert http.post("/settings", json={"kept": 1}).status_code == 200
        filler = fill(small_disk)

        refused = {
            "prompt": http.post("/prompt", json=big_prompt()),
            "settings": http.post("/settings", json={"big": "s" * 400_000}),
            "userdata": http.post("/userdata/workflows%2Fbig.json", content=b"u" * 400_000),
        }
        for what, answer in refused.items():
            assert answer.status_code == 507, (what, answer.text)
            assert answer.json()["error"]["type"] == "insufficient_storage", what
        # small control writes may still fit in pages the database already has; either
        # way the answer is a success or a 507, and the job is in the state it says
        for action in ("pause", "abort"):
            answer = http.post(f"/api/jobs/{before}/{action}")
            assert answer.status_code in (200, 507), answer.text
        state = http.get(f"/api/jobs/{before}/state")
        assert state.status_code == 200 and state.json()["state"] in ("queued", "paused",
                                                                       "aborted")  # fmt: skip
        # nothing half-written: no temporary files left, settings as they were
        leftovers = [p.name for p in small_disk.rglob("*.tmp")]
        assert leftovers == []
        assert http.get("/settings").json().get("kept") == 1
        assert "big" not in http.get("/settings").json()
        assert http.get("/userdata/workflows%2Fbig.json").status_code == 404

        filler.unlink()
        after = http.post("/prompt", json=big_prompt())
        assert after.status_code == 200, after.text
        assert http.post("/settings", json={"big": "s" * 400_000}).status_code == 200
        assert http.post("/userdata/workflows%2Fbig.json", content=b"u").status_code == 200
        listed = {j["id"] for j in http.get("/api/jobs?limit=50").json()["jobs"]}
        assert {before, after.json()["prompt_id"]} <= listed
    database = next((small_disk / "data").rglob("*.db"))
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_disk_full_answer_is_json_for_midrun_routes_too(
    server: LiveServer, small_disk: Path
) -> None:
    with server.client() as http:
        workflow = txt2img(steps=1)
        for i in range(25):  # 25 text nodes of 19,000 characters: ~475 KB to store
            workflow[f"t{i}"] = {"class_type": "CLIPTextEncode",
                                 "inputs": {"text": "x" * 19_000, "clip": ["4", 1]}}
        saved = {"name": "w", "workflow": workflow}
        fill(small_disk)
        answer = http.post("/api/workflows", json=saved)
        assert answer.status_code == 507, answer.text
        assert "disk is full" in answer.json()["error"]["message"]
