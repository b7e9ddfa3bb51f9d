"""The schema as specified, its migrations, the audit log's append-only rule, artifacts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text

from midrun.store.artifacts import ArtifactKeyError, LocalArtifacts
from midrun.store.database import HEAD, Database, DatabaseError
from tests.jobs.conftest import ticker


def test_migrations_create_every_table_at_the_head_revision(db) -> None:
    assert db.revision() == HEAD
    tables = set(inspect(db.engine).get_table_names())
    assert {"workflows", "batches", "jobs", "job_debug_state", "job_edits", "breakpoints",
            "job_events", "pipeline", "workers"} <= tables  # fmt: skip
    db.migrate()  # idempotent
    assert db.revision() == HEAD


def test_job_debug_state_has_the_specified_columns_and_defaults(db, service) -> None:
    columns = {c["name"]: c for c in inspect(db.engine).get_columns("job_debug_state")}
    assert list(columns) == ["id", "job_id", "paused_at_step", "modified_params_json",
                             "intermediate_previews_json", "abort_reason", "created_at",
                             "updated_at"]  # fmt: skip
    if db.dialect == "postgresql":
        assert str(columns["modified_params_json"]["type"]) == "JSONB"
    unique = inspect(db.engine).get_unique_constraints("job_debug_state")
    indexes = inspect(db.engine).get_indexes("job_debug_state")
    assert any(c["column_names"] == ["job_id"] for c in unique) or any(
        i["column_names"] == ["job_id"] and i["unique"] for i in indexes
    )
    job = service.submit(ticker())
    with db.begin() as conn:
        # A row inserted with nothing but job_id gets the documented defaults.
        conn.execute(text("DELETE FROM job_debug_state WHERE job_id = :j"), {"j": job.id})
        conn.execute(text("INSERT INTO job_debug_state (job_id) VALUES (:j)"), {"j": job.id})
    state = service.debug_state(job.id)
    assert state["modified_params_json"] == {} and state["intermediate_previews_json"] == []
    assert state["paused_at_step"] is None and state["abort_reason"] is None


def stamps(service, job_id: str) -> tuple[datetime, datetime]:
    state = service.debug_state(job_id)
    return datetime.fromisoformat(state["created_at"]), datetime.fromisoformat(state["updated_at"])


def test_updated_at_is_kept_current(db, service) -> None:
    """An update of a job_debug_state row sets its updated_at to the writer's clock: the
    database's transaction time on PostgreSQL (the trigger, whoever writes the row), the
    writing process's clock on SQLite (SQLAlchemy's onupdate). The row starts with an
    updated_at far in the past, so an update that leaves it alone cannot pass."""
    from sqlalchemy import delete, insert, update

    from midrun.store.schema import job_debug_state, now

    job = service.submit(ticker())
    long_ago = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    with db.begin() as conn:  # an INSERT: the trigger (BEFORE UPDATE) leaves it as given
        conn.execute(delete(job_debug_state).where(job_debug_state.c.job_id == job.id))
        conn.execute(insert(job_debug_state).values(job_id=job.id, created_at=long_ago,
                                                    updated_at=long_ago))  # fmt: skip
    assert stamps(service, job.id) == (long_ago, long_ago)
    with db.begin() as conn:
        if db.dialect == "postgresql":
            # now() is the transaction's start time: the trigger must write exactly it.
            expected = conn.execute(text("SELECT now()")).scalar()
            conn.execute(text("UPDATE job_debug_state SET paused_at_step = 3 WHERE job_id = :j"),
                         {"j": job.id})  # fmt: skip
        else:
            earliest = now()
            conn.execute(update(job_debug_state).where(job_debug_state.c.job_id == job.id)
                         .values(paused_at_step=3))  # fmt: skip
            latest = now()
    assert service.debug_state(job.id)["paused_at_step"] == 3
    created, updated = stamps(service, job.id)
    assert created == long_ago  # only updated_at moves
    if db.dialect == "postgresql":
        assert updated == expected
    else:  # set during the UPDATE, by the clock onupdate reads
        assert earliest <= updated <= latest


def test_the_audit_log_is_append_only(db, service) -> None:
    job = service.submit(ticker())
    for statement in ("UPDATE job_events SET actor = 'x'", "DELETE FROM job_events"):
        with pytest.raises(Exception, match="append-only"), db.begin() as conn:
            conn.execute(text(statement))
    assert [e["kind"] for e in service.events(job.id)] == ["queued"]


def test_unsupported_database_urls_are_refused() -> None:
    with pytest.raises(DatabaseError, match="Unsupported"):
        Database("mysql://localhost/x")


def test_the_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path) -> None:
    db = Database.open(data_dir=tmp_path / "data")
    assert db.dialect == "sqlite" and (tmp_path / "data" / "midrun.db").exists()


@pytest.mark.parametrize(
    "key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a\\b", "", ".", "a/./b"]
)
def test_artifact_keys_cannot_leave_the_store(tmp_path, key) -> None:
    store = LocalArtifacts(tmp_path / "artifacts")
    with pytest.raises(ArtifactKeyError):
        store.put(key, b"x")
    with pytest.raises(ArtifactKeyError):
        store.get(key)


def test_artifacts_round_trip_and_list(tmp_path) -> None:
    store = LocalArtifacts(tmp_path)
    store.put("jobs/a/previews/1.jpg", b"one")
    store.put("jobs/a/previews/2.jpg", b"two")
    assert store.get("jobs/a/previews/2.jpg") == b"two"
    assert store.list("jobs/a") == ["jobs/a/previews/1.jpg", "jobs/a/previews/2.jpg"]
    store.delete("jobs/a/previews")
    assert store.list("jobs/a") == []


def test_the_files_a_job_outputs_name_are_indexed_with_its_owner(service) -> None:
    from midrun.jobs.records import output_files
    from midrun.jobs.worker import WorkerPool

    saving = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "SaveBytes", "inputs": {"value": ["1", 0], "size": 8}},
    }
    job = service.submit(saving, owner="ana")
    with WorkerPool(service, ["cpu"]):
        done = service.wait(job.id)
    assert done.state.value == "completed"
    name = f"bytes_{job.id}.bin"
    assert service.store.owns_file("ana", "output", "", name)
    assert service.store.owns_file("ana", "output", "./", name)  # the same folder
    assert not service.store.owns_file("bob", "output", "", name)
    assert not service.store.owns_file("ana", "temp", "", name)
    assert not service.store.owns_file("ana", "output", "other", name)
    assert output_files(
        {
            "9": {
                "images": [
                    {"filename": "a.png", "subfolder": "x/", "type": "temp"},
                    "junk",
                    {"filename": 3},
                ]
            },
            "partial": {"5": "jobs/j/partial_5.png"},
        }
    ) == [("temp", "x", "a.png")]
