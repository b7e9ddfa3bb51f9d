"""Files a job makes: outputs, previews, checkpoints. Behind a small interface (put / get /
delete / list by key) so object storage can come later; keys are relative, slash-separated,
and confined to the store's root."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from midrun.core.errors import MidrunError
from midrun.engine.runstate import RunState

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ArtifactKeyError(MidrunError):
    type = "invalid_artifact_key"


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, prefix: str) -> None: ...
    def move(self, key: str, new_key: str) -> str | None: ...
    def list(self, prefix: str) -> list[str]: ...
    def save_run_state(self, job_id: str, state: RunState) -> None: ...
    def load_run_state(self, job_id: str) -> RunState | None: ...
    def has_run_state(self, job_id: str) -> bool: ...


def check_key(key: str) -> str:
    """Refuses anything but plain relative names: no '..', no absolute paths, no
    backslashes, no empty parts."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ArtifactKeyError(f"Invalid artifact key {key!r}", key=key)
    return key


class LocalArtifacts:
    """Artifacts as files under ``root`` (the data directory's ``artifacts/``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactKeyError(f"No artifact {key!r}", key=key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, prefix: str) -> None:
        target = self.path(prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()

    def move(self, key: str, new_key: str) -> str | None:
        """Rename ``key`` (a file or a folder of them) to ``new_key``, which must not
        exist; returns ``new_key``, or None when there was nothing to move."""
        source, target = self.path(key), self.path(new_key)
        if not source.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        return new_key

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def _checkpoint_dir(self, job_id: str) -> Path:
        return self.path(f"jobs/{job_id}/checkpoint")

    def save_run_state(self, job_id: str, state: RunState) -> None:
        with self._checkpoint_lock(job_id, fcntl.LOCK_EX):
            state.save(self._checkpoint_dir(job_id))  # atomic: the previous one survives a crash

    @contextmanager
    def _checkpoint_lock(self, job_id: str, mode: int) -> Iterator[None]:
        """A job's checkpoint is saved under an exclusive lock and read under a shared
        one (``flock`` on ``jobs/{id}/.checkpoint.lock``, so across processes too): a save
        is two renames, and a read between them would find half of it."""
        path = self.path(f"jobs/{job_id}/.checkpoint.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def has_run_state(self, job_id: str) -> bool:
        """Whether the job has a checkpoint to resume from (nothing is read)."""
        return RunState.locate(self._checkpoint_dir(job_id)) is not None

    def load_run_state(self, job_id: str) -> RunState | None:
        directory = self._checkpoint_dir(job_id)
        old = directory.with_name(f".{directory.name}.old")
        if not directory.exists() and not old.exists():
            return None
        with self._checkpoint_lock(job_id, fcntl.LOCK_SH):
            return RunState.load(directory)
