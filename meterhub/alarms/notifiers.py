"""Built-in notifiers (email, webhook, SMS, portal) and the built-in HTTP SMS-gateway provider.

A notifier has ``key``, ``label``, ``settings_fields``, ``secret_fields``, ``local`` (delivered inside the
dispatch transaction, no network) and ``send(message, recipient, settings, secrets, session)`` that raises
on failure so the rq job retries. Plugins add notifiers through ``register_notifiers`` and SMS providers
through ``register_sms_providers``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy.orm import Session

from ..i18n import _l
from ..errors import ConfigError, MeterhubError

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Meterhub-Signature"
TIMESTAMP_HEADER = "X-Meterhub-Timestamp"


class DeliveryError(MeterhubError):
    """A message could not be delivered (the job will retry while retries are left)."""


@dataclass(frozen=True)
class Message:
    """One rendered notification: a title, a text and the machine-readable payload."""

    title: str
    body: str
    payload: dict[str, Any] = field(default_factory=dict)
    account_id: int | None = None
    alarm_id: int | None = None
    # title and text as stored messages (meterhub.i18n), for notifiers that keep them for a reader (the portal)
    stored_title: str = ""
    stored_body: str = ""


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10.0) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"URL {url!r} must start with http:// or https://")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        message = f"POST {url} answered {err.code} {err.reason}"
        err.close()
        raise DeliveryError(message) from None
    except (urllib.error.URLError, OSError) as err:
        raise DeliveryError(f"POST {url} failed: {err}") from err


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: ``sha256=`` + hex HMAC-SHA256 over ``timestamp + "." + body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class EmailNotifier:
    """Email over SMTP (plain, STARTTLS or implicit TLS) to the configured addresses."""

    key, label, local = "email", _l("Email (SMTP)"), False
    settings_fields = ("host", "port", "security", "username", "from")
    secret_fields = ("password",)

    def recipients(self, session: Session, config: Any, alarm: Any) -> list[str]:
        return [r for r in config.recipients if "@" in r]

    def send(self, message: Message, recipient: str, settings: dict[str, Any], secrets: dict[str, str],
             session: Session | None = None, attachments: list[tuple[str, bytes]] | None = None) -> None:
        email = EmailMessage()
        email["Subject"], email["From"], email["To"] = message.title, settings.get("from") or "meterhub", recipient
        email.set_content(message.body)
        for filename, data in attachments or []:
            email.add_attachment(data, maintype="application",
                                 subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet", filename=filename)
        host, port = settings.get("host") or "127.0.0.1", int(settings.get("port") or 25)
        security = settings.get("security") or "none"
        try:
            smtp_class = smtplib.SMTP_SSL if security == "ssl" else smtplib.SMTP
            with smtp_class(host, port, timeout=15) as smtp:
                if security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if settings.get("username"):
                    smtp.login(settings["username"], secrets.get("password", ""))
                smtp.send_message(email)
        except (smtplib.SMTPException, OSError) as err:
            raise DeliveryError(f"SMTP {host}:{port} to {recipient}: {err}") from err


class WebhookNotifier:
    """A JSON POST signed with HMAC-SHA256 (headers ``X-Meterhub-Timestamp`` and ``X-Meterhub-Signature``)."""

    key, label, local = "webhook", _l("Webhook (signed)"), False
    settings_fields = ("url",)
    secret_fields = ("secret",)

    def recipients(self, session: Session, config: Any, alarm: Any) -> list[str]:
        urls = [r for r in config.recipients if r.startswith(("http://", "https://"))]
        return urls or ([config.settings["url"]] if config.settings.get("url") else [])

    def send(self, message: Message, recipient: str, settings: dict[str, Any], secrets: dict[str, str],
             session: Session | None = None) -> None:
        body = json.dumps({"event": "alarm.raised", "title": message.title, "text": message.body,
                           "alarm": message.payload}, ensure_ascii=False, sort_keys=True, default=str).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp, "User-Agent": "meterhub"}
        if secrets.get("secret"):
            headers[SIGNATURE_HEADER] = sign(secrets["secret"], timestamp, body)
        _post(recipient, body, headers)


class HttpJsonSmsProvider:
    """A generic HTTP SMS gateway: POST ``{"to", "text", "sender"}`` with ``Authorization: Bearer <api_key>``."""

    key, label = "http_json", _l("HTTP JSON gateway")

    def send_sms(self, phone: str, text: str, settings: dict[str, Any], secrets: dict[str, str]) -> None:
        body = json.dumps({"to": phone, "text": text, "sender": settings.get("sender", "")},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if secrets.get("api_key"):
            headers["Authorization"] = f"Bearer {secrets['api_key']}"
        status, answer = _post(settings.get("url") or "", body, headers)
        try:
            ok = json.loads(answer or b"{}").get("ok", True)
        except ValueError:
            ok = True
        if not ok:
            raise DeliveryError(f"SMS gateway refused the message to {phone}: {answer[:200]!r}")


class SmsNotifier:
    """SMS through a provider plugin chosen per group (``settings["provider"]``); one template per kind."""

    key, label, local = "sms", _l("SMS"), False
    settings_fields = ("provider", "url", "sender")
    secret_fields = ("api_key",)

    def recipients(self, session: Session, config: Any, alarm: Any) -> list[str]:
        phones = [r for r in config.recipients if r.replace("+", "").isdigit()]
        if config.settings.get("to_account_holder") and alarm.account_id:
            from sqlalchemy import text

            phone = session.execute(text("SELECT phone FROM prepaid_accounts WHERE id = :a AND group_id = :g"),
                                    {"a": alarm.account_id, "g": alarm.group_id}).scalar()
            if phone:
                phones.append(phone)
        return list(dict.fromkeys(phones))

    def send(self, message: Message, recipient: str, settings: dict[str, Any], secrets: dict[str, str],
             session: Session | None = None) -> None:
        from .registry import sms_providers

        name = settings.get("provider") or "http_json"
        provider = sms_providers().get(name)
        if provider is None:
            raise ConfigError(f"SMS provider {name!r} is not installed; choose one of {', '.join(sms_providers())}")
        provider.send_sms(recipient, message.body, settings, secrets)


class PortalNotifier:
    """A message in the tenant portal for the holder of the alarm's account."""

    key, label, local = "portal", _l("Portal message"), True
    settings_fields: tuple[str, ...] = ()
    secret_fields: tuple[str, ...] = ()

    def recipients(self, session: Session, config: Any, alarm: Any) -> list[str]:
        return [f"account:{alarm.account_id}"] if alarm.account_id else []

    def send(self, message: Message, recipient: str, settings: dict[str, Any], secrets: dict[str, str],
             session: Session | None = None) -> None:
        from .models import PortalMessage

        assert session is not None, "portal messages are written in the dispatch transaction"
        account_id = int(recipient.split(":", 1)[1])
        group_id = message.payload["group_id"]
        session.add(PortalMessage(group_id=group_id, account_id=account_id, alarm_id=message.alarm_id,
                                  title=message.stored_title or message.title[:200],
                                  body=message.stored_body or message.body))


BUILTIN_NOTIFIERS = (EmailNotifier(), WebhookNotifier(), SmsNotifier(), PortalNotifier())
BUILTIN_SMS_PROVIDERS = (HttpJsonSmsProvider(),)
