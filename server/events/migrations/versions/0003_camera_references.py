"""Camera references: each camera's empty-room depth, for person-crop models.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from server.events.schema import NAME_LEN, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_references",
        sa.Column("camera_id", sa.String(NAME_LEN), primary_key=True),
        sa.Column("png", sa.LargeBinary, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("camera_references")
