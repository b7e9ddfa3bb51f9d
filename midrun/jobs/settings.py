"""Tunables of the job system."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobSettings:
    # Crash-recovery checkpoints of running jobs: every N steps and/or T seconds
    # (0 disables that trigger); a pause always checkpoints.
    checkpoint_every_steps: int = 0
    checkpoint_every_seconds: float = 30.0
    # How often a running job reads its row for control requests made in other
    # processes (requests made in this process arrive at once).
    poll_interval: float = 0.1
    # How often the job's progress is written to its row.
    progress_interval: float = 0.25
    # Resumed jobs go to the front of the queue instead of the back.
    resume_first: bool = False
    # Previews kept when a job completes (plus the final one); aborted and failed jobs
    # keep all of theirs.
    previews_keep: int = 10
    # An aborted generation also decodes its sampler's current estimate with the full VAE.
    decode_on_abort: bool = True
    # Workers write a heartbeat this often; one silent for ``worker_timeout`` is dead
    # and its jobs are recovered.
    heartbeat_seconds: float = 2.0
    worker_timeout: float = 15.0
    # A job whose workers died this many times while running it is failed by recovery
    # ("worker_crashed") instead of being run again: it may be what kills them.
    max_crashes: int = 3
    # A checkpoint that cannot be read fails its job ("fail", the reason names what is
    # wrong) or runs it again from the beginning ("restart").
    broken_checkpoint: str = "fail"
    # How long a pipeline pause waits for every running job to reach a control point.
    pipeline_pause_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.broken_checkpoint not in ("fail", "restart"):
            raise ValueError(f"broken_checkpoint is 'fail' or 'restart', not "
                             f"{self.broken_checkpoint!r}")  # fmt: skip
        if self.max_crashes < 1:
            raise ValueError(f"max_crashes is at least 1, not {self.max_crashes}")
