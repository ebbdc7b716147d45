"""Form errors shown beside their fields (the ``ui.field`` macro's ``errors``)."""

from __future__ import annotations

from meterhub.errors import MeterhubError


def field_errors(err: MeterhubError) -> dict[str, str]:
    """``{field: message}`` for each form field a ``ValidationError`` names (its ``errors``); {} for other errors,
    which the page shows as a flash instead."""
    return {name: str(err) for name in (getattr(err, "errors", None) or {})}
