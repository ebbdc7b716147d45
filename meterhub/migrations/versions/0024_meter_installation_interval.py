"""meter installation interval and purchase-counter baseline (issue 21 item 6: meter swap keeps history right)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 21:00:00

A meter serves its room from ``meters.installed_at`` (exists since 0019) until ``meters.removed_at`` (new, NULL:
still installed): usage outside that interval belongs to no room (a swapped-in meter's past in the store room,
a swapped-out meter's readings after it left). ``prepaid_meter_state.purchase_count_offset`` is the new meter's
own purchase counter minus the account's at its installation, so a swapped-in meter's counter is compared with
ours on the same footing and a swap raises no purchase-counter mismatch.
"""
import sqlalchemy as sa
from alembic import op

revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meters", sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("prepaid_meter_state", sa.Column("purchase_count_offset", sa.Integer(), nullable=False,
                                                   server_default="0"))


def downgrade() -> None:
    op.drop_column("prepaid_meter_state", "purchase_count_offset")
    op.drop_column("meters", "removed_at")
