"""What several servers on one database must agree on: one pending item per product (a unique index, so two
replicas queueing the same product at once keep one), and per-client review quotas counted in the database.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("review_pending_product", "review", ["fingerprint"], unique=True,
                    sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
    op.create_table(  # one row per counted event: a client's events of the last minute are its rows since then
        "quota_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),  # Unix seconds
        sqlite_autoincrement=True,
    )
    op.create_index("quota_event_client", "quota_event", ["client", "at"])


def downgrade() -> None:
    op.drop_table("quota_event")
    op.drop_index("review_pending_product", "review")
