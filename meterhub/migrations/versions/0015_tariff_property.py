"""price plans belong to a property or to the whole group

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 17:45:00

``tariffs.property_id`` NULL is a group-wide plan (only group-level roles change it); a plan with a property
is usable and editable only inside that property. The foreign key goes through ``(group_id, id)`` of the
property, so a plan can never point at another group's property.
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE properties ADD CONSTRAINT uq_properties_group_id_id UNIQUE (group_id, id)")
    op.add_column("tariffs", sa.Column("property_id", sa.BigInteger(), nullable=True))
    op.execute("ALTER TABLE tariffs ADD CONSTRAINT fk_tariffs_group_property FOREIGN KEY (group_id, property_id) "
               "REFERENCES properties (group_id, id) ON DELETE RESTRICT")
    op.create_index("ix_tariffs_property_id", "tariffs", ["property_id"])


def downgrade():
    op.drop_index("ix_tariffs_property_id", table_name="tariffs")
    op.execute("ALTER TABLE tariffs DROP CONSTRAINT fk_tariffs_group_property")
    op.drop_column("tariffs", "property_id")
    op.execute("ALTER TABLE properties DROP CONSTRAINT uq_properties_group_id_id")
