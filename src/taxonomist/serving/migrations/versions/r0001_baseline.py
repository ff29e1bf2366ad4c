"""The store as the releases before migrations wrote it: review queue, feedback, served predictions.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("product", sa.Text, nullable=False),  # the product as posted (JSON)
        sa.Column("prediction", sa.Text, nullable=False),  # the prediction served (JSON)
        sa.Column("category", sa.Text, nullable=False),  # the suggested path
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("margin", sa.Float, nullable=False),  # top-1 minus top-2 leaf probability
        sa.Column("reason", sa.Text, nullable=False),  # low_confidence | keyword_stuffing | unrecognised | audit
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),  # pending|accepted|corrected|dismissed
        sa.Column("decided_category", sa.Text),
        sa.Column("decided_at", sa.Float),
        sa.Column("reviewer", sa.Text),
        sa.Column("fingerprint", sa.Text),  # SHA-256 of the product's content
        sa.Column("dismissed_as", sa.Text),  # not_a_product | cant_tell
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.create_index("review_pending", "review", ["status", "margin"])
    op.create_index("review_fingerprint", "review", ["fingerprint", "status"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("product", sa.Text, nullable=False),  # JSON
        sa.Column("category", sa.Text, nullable=False),  # the correct path
        sa.Column("source", sa.Text, nullable=False),  # review | api
        sa.Column("review_id", sa.Integer, sa.ForeignKey("review.id")),
        sa.Column("model_version", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "served",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),  # scrubbed; at most 200 characters
        sa.Column("leaf", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("backed_off", sa.Integer, nullable=False),
        sa.Column("unknown_share", sa.Float),
        sa.Column("brand", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("served_created", "served", ["created"])


def downgrade() -> None:
    for table in ("served", "feedback", "review"):
        op.drop_table(table)
