"""The database handle: an engine for SQLite (the embedded default, a file in the data
directory) or PostgreSQL (by URL), migrated to the current schema on open."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from midrun.core.errors import MidrunError

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0003"
_AFTER_COMMIT = "midrun.after_commit"


def _json_loads(text: str) -> Any:
    """SQLite's JSON columns, read back: a NaN or Infinity stored before requests were
    read strictly reads as null, so one old row cannot make every listing fail."""
    return json.loads(text, parse_constant=lambda _: None)


def after_commit(connection: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once ``connection``'s transaction (a :meth:`Database.begin`) has
    committed; outside one, at once."""
    queued = connection.info.get(_AFTER_COMMIT)
    if queued is None:
        callback()
    else:
        queued.append(callback)


class DatabaseError(MidrunError):
    type = "database_error"


def default_url(data_dir: str | os.PathLike[str]) -> str:
    path = Path(data_dir).resolve() / "midrun.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Database:
    """One engine per process. ``begin()`` is a transaction; on SQLite it takes the write
    lock up front (``BEGIN IMMEDIATE``), so read-then-write sequences are serialised
    between threads and processes exactly as row locks serialise them on PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(
                f"Unsupported database {self.dialect!r}: use a sqlite:/// file or a "
                "postgresql:// URL"
            )
        if self.dialect == "postgresql" and self.url.drivername == "postgresql":
            self.url = self.url.set(drivername="postgresql+psycopg")
        self.engine: Engine = self._create_engine(echo)

    def _create_engine(self, echo: bool) -> Engine:
        if self.dialect == "postgresql":
            return create_engine(self.url, echo=echo, pool_size=10, max_overflow=20,
                                 pool_pre_ping=True)  # fmt: skip
        # Pooled: closing SQLite's last connection checkpoints the WAL, far too costly
        # per transaction. Each pooled connection is used by one thread at a time.
        engine = create_engine(self.url, echo=echo, pool_size=8, max_overflow=32,
                               connect_args={"check_same_thread": False, "timeout": 30},
                               json_deserializer=_json_loads)  # fmt: skip

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            reading = connection.get_execution_options().get("midrun_read", False)
            connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

        return engine

    @classmethod
    def open(
        cls, url: str | None = None, *, data_dir: str | os.PathLike[str] = "data"
    ) -> Database:
        """Connect (``url`` or the SQLite file in ``data_dir``) and migrate to the head."""
        db = cls(url or os.environ.get("MIDRUN_DATABASE_URL") or default_url(data_dir))
        db.migrate()
        return db

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction. What :func:`after_commit` queued on it runs once it has
        committed (never if it rolls back)."""
        queued: list[Callable[[], None]] = []
        with self.engine.begin() as connection:
            connection.info[_AFTER_COMMIT] = queued
            try:
                yield connection
            finally:
                connection.info.pop(_AFTER_COMMIT, None)
        for callback in queued:
            callback()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (no write lock on SQLite)."""
        with self.engine.connect() as connection:
            connection.execution_options(midrun_read=True)
            yield connection

    def migrate(self) -> None:
        """Bring the schema to the head revision (concurrent openers wait for one another:
        an advisory lock on PostgreSQL, the write lock on SQLite)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(7270712)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            try:
                row = connection.execute(text("SELECT version_num FROM alembic_version"))
            except Exception:
                return None
            return row.scalar()

    def dispose(self) -> None:
        self.engine.dispose()
