"""command errors as codes: shown in the reader's language (issue 21)

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-08 00:30:00

``commands.error_code`` (a code of ``meterhub.commands.messages.MESSAGES``) and ``commands.error_params`` (its
parameters) next to ``commands.error`` (the English text, kept for logs, the audit log and the API). Rows written
before have no code and are shown as their text.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("error_code", sa.String(64), nullable=True))
    op.add_column("commands", sa.Column("error_params", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("commands", "error_params")
    op.drop_column("commands", "error_code")
