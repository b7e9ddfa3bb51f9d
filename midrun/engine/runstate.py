"""A suspended run as plain data: JSON plus named binary blobs, written as files.

Layout of a saved run state (a directory), format version 2::

    run.json      {"format": "midrun.run_state", "version": 2, "kind", "run_id", "reason",
                   "blobs": {name: size in bytes}, "plan": {...}}
    blobs/b0.bin  binary parts (tensors, bytes) referenced from the plan

``plan`` is a :class:`~midrun.engine.checkpoint.WorkflowCheckpoint` or a
:class:`~midrun.engine.checkpoint.StateGraphCheckpoint` by ``kind``. Version 1 (no
``format`` marker, no blob list; the same plan layout) is still read; anything else (a
newer version, JSON that is not a midrun run state, an unknown kind, a malformed plan, a
missing or truncated blob) is refused with a :class:`RunStateError` naming the file.

Everything needed to continue is inside; a fresh process with the same node types (or
the same StateGraph code) reads it back and finishes the run with the same result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midrun.core.errors import RunStateError
from midrun.engine.checkpoint import (
    CHECKPOINT_KINDS,
    Checkpoint,
    StateGraphCheckpoint,
    WorkflowCheckpoint,
)
from midrun.engine.codec import TAG

#: The ``format`` marker of a midrun run state's run.json.
FORMAT = "midrun.run_state"
#: The version this build writes.
VERSION = 2
#: The versions this build reads (1: no format marker and no blob list).
READABLE_VERSIONS = (1, 2)

_BLOB_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(slots=True)
class RunState:
    """Where a suspended run stopped: ``plan`` is the plan's typed checkpoint.

    ``version`` is the format version the state was read from (``VERSION`` for a new
    one); ``save`` always writes the current version."""

    kind: str
    run_id: str
    plan: Checkpoint
    blobs: dict[str, bytes] = field(default_factory=dict)
    reason: str = ""
    version: int = VERSION

    def __post_init__(self) -> None:
        expected = CHECKPOINT_KINDS.get(self.kind)
        if expected is None:
            raise RunStateError(
                f"Unknown run state kind {self.kind!r} "
                f"(this midrun knows {', '.join(sorted(CHECKPOINT_KINDS))})",
                kind=self.kind,
            )
        if not isinstance(self.plan, expected):
            raise TypeError(
                f"a {self.kind} run state takes a {expected.__name__}, "
                f"not {type(self.plan).__name__}"
            )

    def workflow_checkpoint(self) -> WorkflowCheckpoint:
        """The plan of a workflow run; a StateGraph run is refused naming its kind."""
        if not isinstance(self.plan, WorkflowCheckpoint):
            raise RunStateError(
                f"Run state {self.run_id} is a {self.kind} run, not a workflow run",
                kind=self.kind,
            )
        return self.plan

    def stategraph_checkpoint(self) -> StateGraphCheckpoint:
        """The plan of a StateGraph run; a workflow run is refused naming its kind."""
        if not isinstance(self.plan, StateGraphCheckpoint):
            raise RunStateError(
                f"Run state {self.run_id} is a {self.kind} run, not a stategraph run",
                kind=self.kind,
            )
        return self.plan

    def steps(self) -> dict[str, int]:
        """The step each stopped steppable node reached (node -> step), either kind."""
        return {node: entry.step for node, entry in self.plan.in_flight.items()}

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "run_id": self.run_id,
            "reason": self.reason,
            "blobs": {name: len(data) for name, data in sorted(self.blobs.items())},
            "plan": self.plan.to_json(),
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

    @staticmethod
    def locate(directory: str | os.PathLike[str]) -> Path | None:
        """The directory a saved state is read from (the previous one after a crash
        between ``save``'s renames), or None when there is none. Reads nothing."""
        source = Path(directory)
        if (source / "run.json").exists():
            return source
        previous = source.with_name(f".{source.name}.old")
        if (previous / "run.json").exists():
            return previous
        return None

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> RunState:
        source = cls.locate(directory)
        if source is None:
            raise RunStateError(f"No run state at {Path(directory)} (run.json missing)")
        path = source / "run.json"
        try:
            header = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunStateError(f"Run state {path} is corrupt: {exc}") from exc
        version = _version(header, path)
        kind = header.get("kind")
        checkpoint_type = CHECKPOINT_KINDS.get(kind) if isinstance(kind, str) else None
        if checkpoint_type is None:
            raise RunStateError(
                f"Run state {path} is of kind {kind!r}, which this midrun does not know "
                f"(it reads {', '.join(sorted(CHECKPOINT_KINDS))} runs)",
                kind=kind,
            )
        run_id = header.get("run_id")
        if not isinstance(run_id, str):
            raise RunStateError(f"Run state {path} has no run_id")
        try:
            plan = checkpoint_type.from_json(header.get("plan"))
        except RunStateError as exc:
            raise RunStateError(f"Run state {path} is malformed: {exc}") from exc
        referenced = set(_referenced_blobs(header["plan"]))
        sizes: dict[str, int | None]
        if version == 1:
            # Version 1 lists no blobs: expect every blob the plan refers to.
            sizes = dict.fromkeys(sorted(referenced))
        else:
            sizes = header.get("blobs")  # type: ignore[assignment]
            if not isinstance(sizes, dict) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in sizes.values()
            ):
                raise RunStateError(f"Run state {path} is malformed: no 'blobs' sizes")
            unlisted = sorted(referenced - set(sizes))
            if unlisted:
                raise RunStateError(
                    f"Run state {path} is malformed: the plan refers to unlisted blobs "
                    f"{', '.join(unlisted)}"
                )
        blobs: dict[str, bytes] = {}
        for name, size in sizes.items():
            if not isinstance(name, str) or not _BLOB_NAME.fullmatch(name):
                raise RunStateError(f"Run state {path} is malformed: blob name {name!r}")
            blob = source / "blobs" / f"{name}.bin"
            try:
                data = blob.read_bytes()
            except (FileNotFoundError, IsADirectoryError) as exc:
                raise RunStateError(
                    f"Run state {path} is incomplete: blob {blob} is missing"
                ) from exc
            if size is not None and len(data) != size:
                raise RunStateError(
                    f"Run state {path} is incomplete: blob {blob} has {len(data)} bytes, "
                    f"run.json says {size}"
                )
            blobs[name] = data
        reason = header.get("reason", "")
        return cls(
            kind=kind,
            run_id=run_id,
            plan=plan,
            blobs=blobs,
            reason=reason if isinstance(reason, str) else "",
            version=version,
        )


def _version(header: Any, path: Path) -> int:
    """The format version of a parsed run.json, or a refusal that says what it is."""
    readable = " and ".join(str(v) for v in READABLE_VERSIONS)
    if not isinstance(header, dict):
        raise RunStateError(
            f"{path} is not a midrun run state (a JSON {type(header).__name__}, not an object)"
        )
    marker = header.get("format")
    version = header.get("version")
    if marker is None and version == 1 and {"kind", "run_id", "plan"} <= header.keys():
        return 1  # the one layout before the format marker
    if marker != FORMAT:
        raise RunStateError(
            f"{path} is not a midrun run state (format {marker!r}, expected {FORMAT!r})"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunStateError(f"Run state {path} has no version number (got {version!r})")
    if version > VERSION:
        raise RunStateError(
            f"Run state {path} has format version {version}, written by a newer midrun; "
            f"this midrun reads versions {readable}: resume it with that newer midrun"
        )
    if version not in READABLE_VERSIONS:
        raise RunStateError(
            f"Run state {path} has format version {version}; this midrun reads versions "
            f"{readable}"
        )
    return version


def _referenced_blobs(value: Any) -> Iterator[str]:
    """The blob names a plan's encoded values refer to (``{"$t": ..., "blob": name}``)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            if TAG in current and isinstance(current.get("blob"), str):
                yield current["blob"]
            stack.extend(current.values())
