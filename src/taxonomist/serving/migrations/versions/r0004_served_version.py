"""The model version the servers on the database serve: a reload on one reaches the others (they poll it).

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving",
        sa.Column("key", sa.Text, primary_key=True),  # "version"
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("serving")
