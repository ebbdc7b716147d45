"""The meterhub error hierarchy: each message says what went wrong, for which object, and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MeterhubError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(MeterhubError):
    """The configuration is missing or inconsistent; the message names the setting to fix."""


class NotFound(MeterhubError):
    """The object does not exist or is outside the caller's scope (always rendered as 404)."""


class PermissionDenied(MeterhubError):
    """The caller lacks a permission for an action on an object they may see."""


class ValidationError(MeterhubError):
    """Input from outside (form, API, file) is invalid; ``errors`` maps fields to codes (what the API answers),
    ``messages`` maps fields to what to tell a person beside that field when one error names several fields."""

    def __init__(self, message: object, errors: dict[str, str] | None = None,
                 messages: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}
        self.messages = messages or {}


@contextmanager
def about(field: str) -> Iterator[None]:
    """A ``ValidationError`` raised inside that names no field is about ``field`` (a form shows it beside it)."""
    try:
        yield
    except ValidationError as err:
        if not err.errors:
            err.errors = {field: "invalid"}
        raise


class RateLimited(MeterhubError):
    """Too many attempts; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuditChainBroken(MeterhubError):
    """The audit log's hash chain does not verify; the message names the first broken row."""
