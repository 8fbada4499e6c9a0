"""notify: outbox messages kept as the JSON text sent (json, not jsonb)

Revision ID: 0003
"""
from alembic import op

from shared.migrations import outbox_message_as_json_v2, outbox_message_as_jsonb_v1

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "notify"


def upgrade():
    outbox_message_as_json_v2(op, S)


def downgrade():
    outbox_message_as_jsonb_v1(op, S)
