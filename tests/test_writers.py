"""One writer per table: every INSERT, UPDATE and DELETE of a table is made by the one
module that owns it (the job tables by the store, jobs/records.py). The check parses
every module under midrun/ and finds writes by their SQLAlchemy shape: ``insert(t)``,
``update(t)``, ``delete(t)`` and ``t.insert()`` / ``t.update()`` / ``t.delete()``."""

from __future__ import annotations

import ast
from pathlib import Path

from midrun.store import schema

ROOT = Path(__file__).resolve().parents[1] / "midrun"

# Which module writes each table. The job tables are the store's alone.
WRITERS = {
    "jobs": "midrun.jobs.records",
    "job_edits": "midrun.jobs.records",
    "job_events": "midrun.jobs.records",
    "job_debug_state": "midrun.jobs.records",
    "job_files": "midrun.jobs.records",
    "workers": "midrun.jobs.worker",
    "pipeline": "midrun.jobs.pipeline",
    "batches": "midrun.jobs.batches",
    "breakpoints": "midrun.jobs.breakpoints",
    "workflows": "midrun.jobs.workflows",
}
WRITES = {"insert", "update", "delete"}


def writes_in(source: str, tables: set[str]) -> list[tuple[str, int]]:
    """(table, line) of every write of one of ``tables`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else None)  # fmt: skip
        if name not in WRITES:
            continue
        target: ast.expr | None = None
        if isinstance(func, ast.Attribute) and not node.args:
            target = func.value  # t.insert()
        elif node.args:
            target = node.args[0]  # insert(t)
        if isinstance(target, ast.Attribute):
            table = target.attr  # schema.jobs
        elif isinstance(target, ast.Name):
            table = target.id
        else:
            continue
        if table in tables:
            found.append((table, node.lineno))
    return sorted(found, key=lambda f: f[1])


def module_name(path: Path) -> str:
    return ".".join(("midrun", *path.relative_to(ROOT).with_suffix("").parts))


def test_every_table_has_one_writer_and_it_is_listed() -> None:
    assert set(WRITERS) == set(schema.metadata.tables) - {"alembic_version"}


def test_each_table_is_written_only_by_its_owner() -> None:
    tables = set(WRITERS)
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic revisions create and fill the tables
        module = module_name(path)
        for table, line in writes_in(path.read_text(encoding="utf-8"), tables):
            if WRITERS[table] != module:
                wrong.append(f"{module}:{line} writes {table} (its writer is {WRITERS[table]})")
    assert not wrong, "\n".join(wrong)


def test_the_check_finds_each_shape_of_write() -> None:
    source = (
        "conn.execute(insert(jobs), {})\n"
        "conn.execute(update(schema.job_edits).where(x))\n"
        "conn.execute(jobs.update().values(a=1))\n"
        "conn.execute(delete(breakpoints))\n"
        "conn.execute(select(jobs))\n"
        "d.update({'a': 1})\n"
    )
    found = writes_in(source, set(WRITERS))
    assert found == [("jobs", 1), ("job_edits", 2), ("jobs", 3), ("breakpoints", 4)]
