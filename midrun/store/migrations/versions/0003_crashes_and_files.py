"""How many workers died while running a job (recovery fails a job that keeps killing its
worker instead of running it again for ever), and the files each job's outputs name, with
its owner (a creator fetches only their own from the shared output and temp folders).

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("crashes", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.create_table(
        "job_files",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("type", sa.String(20), primary_key=True),
        sa.Column("subfolder", sa.String(500), primary_key=True),
        sa.Column("filename", sa.String(500), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=True),
    )
    op.create_index("ix_job_files_file", "job_files", ["filename", "type", "subfolder"])


def downgrade() -> None:
    op.drop_index("ix_job_files_file", "job_files")
    op.drop_table("job_files")
    op.drop_column("jobs", "crashes")
