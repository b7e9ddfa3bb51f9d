"""The tables, as SQLAlchemy Core metadata. Migrations (``migrations/versions``) create
them; this module is what the code reads and writes against.

JSON columns are JSONB on PostgreSQL and JSON text on SQLite. Times are stored in UTC and
read back timezone-aware on both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def _created() -> Column[Any]:
    return Column("created_at", UTCDateTime(), nullable=False, default=now)


workflows = Table(
    "workflows",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner", String(100), nullable=True),
    Column("workflow", Json, nullable=False),  # API format
    Column("default_parameters", Json, nullable=False, server_default=text("'{}'")),
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False, default=now, onupdate=now),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow_id", String(64), ForeignKey("workflows.id"), nullable=True),
    Column("owner", String(100), nullable=True),
    Column("total_count", Integer, nullable=False),
    Column("completed_count", Integer, nullable=False, server_default=text("0")),
    Column("failed_count", Integer, nullable=False, server_default=text("0")),
    Column("status", String(20), nullable=False),  # running | completed | stopped
    Column("variations", Json, nullable=False, server_default=text("'{}'")),
    _created(),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    # Queue order within a priority: a monotonically increasing number (ComfyUI's "number").
    Column("number", Integer, nullable=False),
    Column("kind", String(20), nullable=False),  # workflow | stategraph
    Column("workflow_id", String(64), ForeignKey("workflows.id"), nullable=True),
    Column("workflow", Json, nullable=False),  # API prompt, or {"graph", "input"}
    Column("parameters_used", Json, nullable=False, server_default=text("'{}'")),
    Column("extra_data", Json, nullable=False, server_default=text("'{}'")),
    Column("batch_id", String(64), ForeignKey("batches.id"), nullable=True),
    Column("batch_index", Integer, nullable=True),
    Column("owner", String(100), nullable=True),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("state", String(20), nullable=False),
    Column("version", Integer, nullable=False, server_default=text("1")),
    # A control request the worker acts on at its next control point: "abort" | "edit".
    Column("request", String(20), nullable=True),
    Column("request_reason", Text, nullable=True),
    Column("paused_by", String(20), nullable=True),  # user | pipeline | breakpoint
    Column("worker_id", String(64), nullable=True),
    Column("queued_at", UTCDateTime(), nullable=False, default=now),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("stint_started_at", UTCDateTime(), nullable=True),  # current running stretch
    Column("active_seconds", Float, nullable=False, server_default=text("0")),
    Column("checkpoint_step", Integer, nullable=True),
    Column("progress", Json, nullable=False, server_default=text("'{}'")),
    Column("outputs", Json, nullable=False, server_default=text("'{}'")),
    Column("error", Json, nullable=True),
    Column("hidden_at", UTCDateTime(), nullable=True),  # left the history listing (0002)
    # Workers that died while running it (0003): past JobSettings.max_crashes it fails.
    Column("crashes", Integer, nullable=False, server_default=text("0")),
)
Index("ix_jobs_queue", jobs.c.state, jobs.c.priority, jobs.c.number)
Index("ix_jobs_number", jobs.c.number)
Index("ix_jobs_batch", jobs.c.batch_id, jobs.c.batch_index)

# The files a job's outputs name (ComfyUI's /view type, subfolder, filename), with the
# job's owner: whose a file in the shared output and temp folders is (0003).
job_files = Table(
    "job_files",
    metadata,
    Column("job_id", String(64), ForeignKey("jobs.id"), primary_key=True),
    Column("type", String(20), primary_key=True),
    Column("subfolder", String(500), primary_key=True),
    Column("filename", String(500), primary_key=True),
    Column("owner", String(100), nullable=True),
)
Index("ix_job_files_file", job_files.c.filename, job_files.c.type, job_files.c.subfolder)

job_debug_state = Table(
    "job_debug_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False, unique=True),
    Column("paused_at_step", Integer, nullable=True),
    Column("modified_params_json", Json, nullable=False, server_default=text("'{}'")),
    Column("intermediate_previews_json", Json, nullable=False, server_default=text("'[]'")),
    Column("abort_reason", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, server_default=func.now(), default=now),
    # Kept current by a trigger on PostgreSQL and by SQLAlchemy's onupdate on SQLite.
    Column(
        "updated_at",
        UTCDateTime(),
        nullable=False,
        server_default=func.now(),
        default=now,
        onupdate=now,
    ),
)

job_edits = Table(
    "job_edits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("node_id", String(100), nullable=False),
    Column("input_name", String(100), nullable=False),
    Column("old", Json, nullable=True),
    Column("new", Json, nullable=True),
    Column("status", String(20), nullable=False),  # pending | applied | undone | refused
    Column("actor", String(100), nullable=True),
    Column("step", Integer, nullable=True),  # the step it was made at
    Column("applied_step", Integer, nullable=True),
    Column("reason", Text, nullable=True),  # why refused
    _created(),
)

breakpoints = Table(
    "breakpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow_id", String(64), ForeignKey("workflows.id"), nullable=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=True),
    Column("spec", Json, nullable=False),  # midrun.debug.breakpoints JSON form
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    _created(),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=True, index=True),  # null: pipeline-wide
    Column("kind", String(40), nullable=False),
    Column("actor", String(100), nullable=True),
    Column("at", UTCDateTime(), nullable=False, default=now),
    Column("step", Integer, nullable=True),
    Column("node_id", String(100), nullable=True),
    Column("old", Json, nullable=True),
    Column("new", Json, nullable=True),
    Column("data", Json, nullable=False, server_default=text("'{}'")),
)

pipeline = Table(
    "pipeline",
    metadata,
    Column("id", Integer, primary_key=True),  # one row, id 1
    Column("state", String(20), nullable=False),  # running | paused
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("actor", String(100), nullable=True),
    Column("paused_at", UTCDateTime(), nullable=True),
    Column("snapshot", Json, nullable=False, server_default=text("'{}'")),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("device", String(50), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False, default=now),
    Column("heartbeat_at", UTCDateTime(), nullable=False, default=now),
    Column("job_id", String(64), nullable=True),
    Column("stopped_at", UTCDateTime(), nullable=True),
)
