"""A product's attributes as the reviewer left them (review) and with its feedback.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {(t, c["name"]) for t in ("review", "feedback") for c in sa.inspect(op.get_bind()).get_columns(t)}
    if ("review", "decided_attributes") not in have:
        op.add_column("review", sa.Column("decided_attributes", sa.Text))  # JSON
    if ("feedback", "attributes") not in have:
        op.add_column("feedback", sa.Column("attributes", sa.Text))  # JSON


def downgrade() -> None:
    op.drop_column("feedback", "attributes")
    op.drop_column("review", "decided_attributes")
