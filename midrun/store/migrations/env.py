"""Alembic environment: migrations run on a connection handed in by
:meth:`midrun.store.database.Database.migrate` (no alembic.ini, no URL here)."""

from alembic import context

from midrun.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
