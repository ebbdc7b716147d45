"""device authentication and reading times: per-gateway MQTT password hashes, meter installation time

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 17:35:00

``gateways.mqtt_password_hash`` holds the PBKDF2-SHA512 hash (Mosquitto's ``$7$`` format) of the password a
push gateway signs in to the broker with; the password itself is shown once and never stored. The MQTT client
id is the gateway's broker user name and topic level, so it is unique across groups. ``meters.installed_at``
is when the meter was installed: readings dated before it are refused.
"""
import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("gateways", sa.Column("mqtt_password_hash", sa.String(200), nullable=True))
    op.create_index("uq_gateways_mqtt_client_id", "gateways", ["mqtt_client_id"], unique=True,
                    postgresql_where=sa.text("mqtt_client_id IS NOT NULL"))
    op.add_column("meters", sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_meters_installed_at", "meters", ["installed_at"],
                    postgresql_where=sa.text("installed_at IS NOT NULL"))


def downgrade():
    op.drop_index("ix_meters_installed_at", table_name="meters")
    op.drop_column("meters", "installed_at")
    op.drop_index("uq_gateways_mqtt_client_id", table_name="gateways")
    op.drop_column("gateways", "mqtt_password_hash")
