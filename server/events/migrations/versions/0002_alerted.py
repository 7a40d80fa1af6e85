"""Events remember whether they alerted; the rules' recent-alert lookups get an index.

Revision ID: 0002
Revises: 0001

`events.alerted` is true once the rules owed the event an alert (set in the transaction that
writes its first outbox row); existing events are backfilled from their deliveries. The
alert queue (`GET /v1/events?alerted=true`) lists them. `ix_deliveries_recent` serves the
cooldown and repeat lookups, which only look back as far as the rules' longest interval.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ALTER TABLE ADD COLUMN, also on SQLite: a batch "move and copy" would drop the
    # table, and with it (ON DELETE CASCADE) every delivery
    op.add_column(
        "events", sa.Column("alerted", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.execute("UPDATE events SET alerted = TRUE WHERE id IN (SELECT event_id FROM deliveries)")
    op.create_index("ix_events_alerted", "events", ["alerted", "start_at", "id"])
    op.create_index("ix_deliveries_recent", "deliveries", ["destination", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_recent", "deliveries")
    op.drop_index("ix_events_alerted", "events")
    op.drop_column("events", "alerted")  # SQLite >= 3.35
