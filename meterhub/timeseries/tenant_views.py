"""Placeholder (filled in by the TimescaleDB work): tenant views over readings and usage."""


def upgrade() -> None:
    """Nothing yet."""


def downgrade() -> None:
    """Nothing yet."""
