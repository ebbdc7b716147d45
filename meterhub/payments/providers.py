"""What a payment provider plugin implements, and the registry of providers.

A provider object has ``key``, ``label``, ``settings_fields``, ``secret_fields`` and:

- ``setup(settings, secrets) -> (settings, secrets)``: fill defaults when a channel is created (keys...);
- ``create_order(channel, order) -> ProviderOrder``: ask the provider for a pay URL or a QR code;
- ``parse_notification(channel, headers, body) -> Notification``: verify the signature (raise
  :class:`ForgedNotification`) and decode the callback (raise :class:`InvalidNotification`);
- ``acknowledge(ok, message) -> (body, status, content_type)``: the answer the provider expects;
- ``records(session, channel, start, end) -> list[ProviderRecord]``: the provider's own statement;
- ``test_only`` (optional, default False): True for a provider that moves no real money (the sandbox); any
  other channel cannot be enabled until ``PUBLIC_BASE_URL`` says where callbacks go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..errors import MeterhubError
from ..plugins import StartupError, get_plugin_manager


class PaymentError(MeterhubError):
    """A payment request was refused (provider unreachable, channel disabled...)."""


class ForgedNotification(PaymentError):
    """A callback's signature does not verify with the provider's key."""


class InvalidNotification(PaymentError):
    """A callback verified but cannot be understood (bad JSON, missing fields, undecryptable resource)."""


@dataclass(frozen=True)
class Channel:
    """A configured channel as providers see it (secrets decrypted)."""

    id: int
    group_id: int
    provider: str
    settings: dict[str, Any]
    secrets: dict[str, str]
    notify_url: str


@dataclass(frozen=True)
class OrderRequest:
    out_trade_no: str
    amount: Decimal
    currency: str
    description: str
    expires_at: datetime
    return_url: str


@dataclass(frozen=True)
class ProviderOrder:
    """Where the payer goes: ``pay_url`` (a page) or ``qr_payload`` (e.g. a WeChat ``code_url``)."""

    pay_url: str = ""
    qr_payload: str = ""


@dataclass(frozen=True)
class Notification:
    """A verified callback: the provider says ``out_trade_no`` was paid as ``txn_id``."""

    out_trade_no: str
    txn_id: str
    amount: Decimal
    currency: str
    succeeded: bool
    timestamp: int
    nonce: str
    paid_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderRecord:
    """One line of the provider's statement."""

    txn_id: str
    out_trade_no: str
    amount: Decimal
    currency: str
    paid_at: datetime | None


def providers() -> dict[str, Any]:
    """Every payment provider by key; duplicate keys stop startup."""
    registry: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for impl in reversed(get_plugin_manager().hook.register_payment_providers.get_hookimpls()):
        for provider in impl.function() or []:
            if provider.key in registry:
                raise StartupError(f"Duplicate payment provider key {provider.key!r} from plugins "
                                   f"{owner[provider.key]} and {impl.plugin_name}; disable one of them")
            registry[provider.key], owner[provider.key] = provider, impl.plugin_name
    return registry


def get_provider(key: str) -> Any:
    provider = providers().get(key)
    if provider is None:
        raise PaymentError(f"payment provider {key!r} is not installed; install its plugin or disable the channel")
    return provider
