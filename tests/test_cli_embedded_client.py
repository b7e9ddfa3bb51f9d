"""The command line's embedded client reaches jobs through the jobs layer only: every one
of its calls, made in a fresh interpreter, leaves ``midrun.server`` unimported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dataclasses import dataclass
    from pathlib import Path

    from midrun.cli.client import Edit, EmbeddedClient

    @dataclass(frozen=True)
    class Places:  # what the client reads of a server's configuration
        data_dir: Path
        database_url: str | None = None
        models_dir: Path | None = None

        @property
        def upload_dir(self) -> Path:
            return self.data_dir / "input"

        @property
        def output_dir(self) -> Path:
            return self.data_dir / "output"

    workflow = json.loads(Path({life!r}).read_text())
    with EmbeddedClient(Places(Path({data!r}))) as client:
        saved = client.save_workflow("life", workflow)
        assert any(p["field"] == "generations" for p in client.parameters(saved["id"]))
        batch = client.batch(saved["id"], None, [{{"type": "cycle", "node_id": "2",
                                                   "field": "generations", "values": [5, 6]}}])
        job_id = batch["jobs"][0]["id"]
        client.pause(job_id)
        made = client.edit(job_id, [Edit("2", "generations", 9)])
        assert client.job_state(job_id)["pending_edits"][0]["new"] == 9
        client.undo(job_id, made["edit_ids"][0])
        client.add_breakpoint({{"node_id": "3"}}, job_id=job_id)
        assert len(client.breakpoints(job_id=job_id)) == 1
        assert client.pipeline()["state"] == "running"
        assert len(client.list_jobs(10)) == 2
        client.abort(job_id, "done")
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("midrun."))))
    """
)


def test_the_embedded_client_never_imports_the_server(tmp_path: Path) -> None:
    script = SCRIPT.format(life=str(ROOT / "midrun" / "examples" / "life.json"),
                           data=str(tmp_path / "data"))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "midrun.jobs.edits" in loaded and "midrun.jobs.views" in loaded  # it did the work
    assert [m for m in loaded if m == "midrun.server" or m.startswith("midrun.server.")] == []
