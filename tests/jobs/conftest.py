"""Fixtures for the job system: every test runs on SQLite and on PostgreSQL (a fresh
schema per test). PostgreSQL tests skip only when the server is unreachable and CI is
not set; in CI an unreachable PostgreSQL is a failure."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from midrun.jobs.service import Jobs
from midrun.jobs.settings import JobSettings
from midrun.jobs.worker import WorkerPool
from midrun.store.database import Database
from tests import testnodes

PG_DSN = os.environ.get("MIDRUN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_DSN.replace("postgresql://", "postgresql://", 1), autocommit=True,
                           connect_timeout=3)  # fmt: skip


def pg_schema() -> Iterator[str]:
    try:
        admin = _pg_admin()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL unreachable ({exc})")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_DSN}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database.open(data_dir=tmp_path)
        yield database
        database.dispose()
        return
    for url in pg_schema():
        database = Database(url)
        database.migrate()
        yield database
        database.dispose()


FAST = JobSettings(poll_interval=0.01, progress_interval=0.05, heartbeat_seconds=0.2,
                   worker_timeout=2.0, pipeline_pause_timeout=10.0)  # fmt: skip


@pytest.fixture
def settings() -> JobSettings:
    return FAST


@pytest.fixture
def service(db: Database, tmp_path, settings: JobSettings) -> Jobs:
    testnodes.reset()
    return Jobs(db, testnodes.registry(), data_dir=tmp_path, settings=settings)


@pytest.fixture
def pool(service: Jobs) -> Iterator[WorkerPool]:
    with WorkerPool(service, ["cpu"]) as workers:
        yield workers


def ticker(steps: int = 20, delay: float = 0.01, gain: int = 1, start: int = 0,
           label: str = "out") -> dict[str, Any]:  # fmt: skip
    return {
        "1": {"class_type": "Const", "inputs": {"value": start}},
        "2": {"class_type": "Ticker", "inputs": {"start": ["1", 0], "steps": steps,
                                                 "delay": delay, "gain": gain}},
        "3": {"class_type": "Output", "inputs": {"value": ["2", 0], "label": label}},
        "4": {"class_type": "Output", "inputs": {"value": ["2", 1], "label": "trace"}},
    }


def result(job: Any) -> tuple[Any, Any]:
    """(total, trace) from a completed ticker job's outputs."""
    return job.outputs["3"]["value"][0], job.outputs["4"]["value"][0]
