"""The first schema: events, cameras and the deliveries outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from server.events.schema import ID_LEN, NAME_LEN, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(ID_LEN), primary_key=True),
        sa.Column("camera_id", sa.String(NAME_LEN), nullable=False),
        sa.Column("label", sa.String(NAME_LEN), nullable=False),
        sa.Column("class_id", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("start_at", UtcDateTime, nullable=False),
        sa.Column("end_at", UtcDateTime, nullable=True),
        sa.Column("model_name", sa.String(NAME_LEN), nullable=False),
        sa.Column("model_version", sa.String(NAME_LEN), nullable=False),
        sa.Column("review", sa.String(20), nullable=False, server_default="new"),
        sa.Column("reviewed_by", sa.String(NAME_LEN), nullable=True),
        sa.Column("reviewed_at", UtcDateTime, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("keep", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_events_start", "events", ["start_at", "id"])
    op.create_index("ix_events_camera", "events", ["camera_id", "start_at", "id"])
    op.create_index("ix_events_label", "events", ["label", "start_at", "id"])
    op.create_index("ix_events_review", "events", ["review", "start_at", "id"])
    op.create_index("ix_events_end", "events", ["end_at"])
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(NAME_LEN), primary_key=True),
        sa.Column("first_seen", UtcDateTime, nullable=False),
        sa.Column("last_seen", UtcDateTime, nullable=False),
        sa.Column("connected", sa.Boolean, nullable=False),
        sa.Column("fps", sa.Float, nullable=False),
        sa.Column("frames", sa.BigInteger, nullable=False),
        sa.Column("drops", sa.BigInteger, nullable=False),
        sa.Column("last_frame_at", UtcDateTime, nullable=True),
        sa.Column("top_label", sa.String(NAME_LEN), nullable=True),
        sa.Column("top_score", sa.Float, nullable=True),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column(
            "event_id",
            sa.String(ID_LEN),
            sa.ForeignKey("events.id", ondelete="CASCADE", name="fk_deliveries_event"),
            nullable=False,
        ),
        sa.Column("destination", sa.String(NAME_LEN), nullable=False),
        sa.Column("kind", sa.String(NAME_LEN), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "destination", "next_attempt_at"])
    op.create_index("ix_deliveries_event", "deliveries", ["event_id", "destination", "created_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("cameras")
    op.drop_table("events")
