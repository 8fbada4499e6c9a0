"""submission: outbox messages kept as the JSON text sent (json, not jsonb)

Revision ID: 0002
"""
from alembic import op

from shared.migrations import outbox_message_as_json_v2, outbox_message_as_jsonb_v1

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "submission"


def upgrade():
    outbox_message_as_json_v2(op, S)


def downgrade():
    outbox_message_as_jsonb_v1(op, S)
