"""A suspended run as plain data: JSON plus named binary blobs, written as files.

Layout of a saved run state (a directory)::

    run.json      {"version", "kind", "run_id", "reason", "plan": {...}}
    blobs/b0.bin  binary parts (tensors, bytes) referenced from run.json

Everything needed to continue is inside; a fresh process with the same node types (or
the same StateGraph code) reads it back and finishes the run with the same result.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midrun.core.errors import RunStateError

VERSION = 1


@dataclass(slots=True)
class RunState:
    """Where a suspended run stopped: ``plan`` is the plan's encoded state."""

    kind: str
    run_id: str
    plan: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)
    reason: str = ""
    version: int = VERSION

    def header(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "run_id": self.run_id,
            "reason": self.reason,
            "plan": self.plan,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write atomically: a crash mid-write leaves the previous state intact."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            (tmp / "blobs").mkdir()
            for name, data in self.blobs.items():
                (tmp / "blobs" / f"{name}.bin").write_bytes(data)
            (tmp / "run.json").write_text(json.dumps(self.header()), encoding="utf-8")
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                target.rename(old)
            tmp.rename(target)
            if old is not None:
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> RunState:
        source = Path(directory)
        previous = source.with_name(f".{source.name}.old")
        if not (source / "run.json").exists() and (previous / "run.json").exists():
            # A crash between save()'s two renames leaves the previous state here.
            source = previous
        try:
            header = json.loads((source / "run.json").read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RunStateError(f"No run state at {source} (run.json missing)") from exc
        except json.JSONDecodeError as exc:
            raise RunStateError(f"Run state at {source} is corrupt: {exc}") from exc
        if header.get("version") != VERSION:
            raise RunStateError(
                f"Run state at {source} has version {header.get('version')}, "
                f"this midrun reads version {VERSION}"
            )
        blobs = {p.stem: p.read_bytes() for p in (source / "blobs").glob("*.bin")}
        return cls(
            kind=header["kind"],
            run_id=header["run_id"],
            plan=header["plan"],
            blobs=blobs,
            reason=header.get("reason", ""),
        )
