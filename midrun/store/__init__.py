"""Persistence: the SQL schema and its migrations, the database handle, job rows, and the
artifact store for files (outputs, previews, checkpoints)."""
