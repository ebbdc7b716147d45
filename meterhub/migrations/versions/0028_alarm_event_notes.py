"""alarm history notes as text: a raised alarm's note holds its reason as a message (read in the reader's language)

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-08 01:00:00

``alarm_events.note`` was varchar(500): the note of a raised "top-up not on the meter" alarm (its amounts and its
reason, stored as message ids with their parameters) did not fit, and was stored as text in the language of the
worker that raised it. It becomes text; a typed note is still cut to 500 characters by the console.
"""
import sqlalchemy as sa
from alembic import op

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("alarm_events", "note", type_=sa.Text(), existing_type=sa.String(500), existing_nullable=False)


def downgrade() -> None:
    op.execute("UPDATE alarm_events SET note = left(note, 500) WHERE length(note) > 500")
    op.alter_column("alarm_events", "note", type_=sa.String(500), existing_type=sa.Text(), existing_nullable=False)
