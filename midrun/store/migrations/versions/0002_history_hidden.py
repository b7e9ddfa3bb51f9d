"""Jobs hidden from the history listing (ComfyUI's "clear history" / "delete" keep the
rows and their audit log; they only leave the listing).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

from midrun.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("hidden_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "hidden_at")
