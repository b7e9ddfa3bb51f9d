"""Initial schema: workflows, batches, jobs, job_debug_state, job_edits, breakpoints,
job_events (append-only), pipeline, workers.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from midrun.store.schema import Json, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json(name: str, default: str | None = None, nullable: bool = False) -> sa.Column:
    server_default = sa.text(f"'{default}'") if default is not None else None
    return sa.Column(name, Json, nullable=nullable, server_default=server_default)


def _time(name: str, nullable: bool = False, server: bool = False) -> sa.Column:
    return sa.Column(
        name, UTCDateTime(), nullable=nullable, server_default=sa.func.now() if server else None
    )


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(100)),
        _json("workflow"),
        _json("default_parameters", "{}"),
        _time("created_at"),
        _time("updated_at"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workflow_id", sa.String(64), sa.ForeignKey("workflows.id")),
        sa.Column("owner", sa.String(100)),
        sa.Column("total_count", sa.Integer, nullable=False),
        sa.Column("completed_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("failed_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(20), nullable=False),
        _json("variations", "{}"),
        _time("created_at"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("workflow_id", sa.String(64), sa.ForeignKey("workflows.id")),
        _json("workflow"),
        _json("parameters_used", "{}"),
        _json("extra_data", "{}"),
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id")),
        sa.Column("batch_index", sa.Integer),
        sa.Column("owner", sa.String(100)),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("request", sa.String(20)),
        sa.Column("request_reason", sa.Text),
        sa.Column("paused_by", sa.String(20)),
        sa.Column("worker_id", sa.String(64)),
        _time("queued_at"),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        _time("stint_started_at", nullable=True),
        sa.Column("active_seconds", sa.Float, nullable=False, server_default=sa.text("0")),
        sa.Column("checkpoint_step", sa.Integer),
        _json("progress", "{}"),
        _json("outputs", "{}"),
        _json("error", nullable=True),
    )
    op.create_index("ix_jobs_queue", "jobs", ["state", "priority", "number"])
    op.create_index("ix_jobs_batch", "jobs", ["batch_id", "batch_index"])
    op.create_index("ix_jobs_number", "jobs", ["number"])
    op.create_table(
        "job_debug_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=False, unique=True),
        sa.Column("paused_at_step", sa.Integer),
        _json("modified_params_json", "{}"),
        _json("intermediate_previews_json", "[]"),
        sa.Column("abort_reason", sa.Text),
        _time("created_at", server=True),
        _time("updated_at", server=True),
    )
    op.create_table(
        "job_edits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("node_id", sa.String(100), nullable=False),
        sa.Column("input_name", sa.String(100), nullable=False),
        _json("old", nullable=True),
        _json("new", nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(100)),
        sa.Column("step", sa.Integer),
        sa.Column("applied_step", sa.Integer),
        sa.Column("reason", sa.Text),
        _time("created_at"),
    )
    op.create_index("ix_job_edits_job_id", "job_edits", ["job_id"])
    op.create_table(
        "breakpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workflow_id", sa.String(64), sa.ForeignKey("workflows.id")),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id")),
        _json("spec"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        _time("created_at"),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64)),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(100)),
        _time("at"),
        sa.Column("step", sa.Integer),
        sa.Column("node_id", sa.String(100)),
        _json("old", nullable=True),
        _json("new", nullable=True),
        _json("data", "{}"),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])
    op.create_table(
        "pipeline",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("actor", sa.String(100)),
        _time("paused_at", nullable=True),
        _json("snapshot", "{}"),
    )
    op.execute("INSERT INTO pipeline (id, state, version, snapshot) VALUES (1, 'running', 1, '{}')")
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("device", sa.String(50), nullable=False),
        _time("started_at"),
        _time("heartbeat_at"),
        sa.Column("job_id", sa.String(64)),
        _time("stopped_at", nullable=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        # updated_at kept current by the database itself, whoever writes the row; the
        # audit log refuses updates and deletes.
        op.execute(
            """
            CREATE FUNCTION midrun_touch_updated_at() RETURNS trigger AS $$
            BEGIN NEW.updated_at = now(); RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER job_debug_state_updated_at BEFORE UPDATE ON job_debug_state
              FOR EACH ROW EXECUTE FUNCTION midrun_touch_updated_at();
            CREATE FUNCTION midrun_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'job_events is append-only'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER job_events_append_only BEFORE UPDATE OR DELETE ON job_events
              FOR EACH ROW EXECUTE FUNCTION midrun_append_only();
            """
        )
    else:
        op.execute(
            """
            CREATE TRIGGER job_events_append_only_update BEFORE UPDATE ON job_events
            BEGIN SELECT RAISE(ABORT, 'job_events is append-only'); END
            """
        )
        op.execute(
            """
            CREATE TRIGGER job_events_append_only_delete BEFORE DELETE ON job_events
            BEGIN SELECT RAISE(ABORT, 'job_events is append-only'); END
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS midrun_touch_updated_at() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS midrun_append_only() CASCADE")
    for table in (
        "workers",
        "pipeline",
        "job_events",
        "breakpoints",
        "job_edits",
        "job_debug_state",
        "jobs",
        "batches",
        "workflows",
    ):
        op.drop_table(table)
