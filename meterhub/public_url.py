"""The platform's public address, ``PUBLIC_BASE_URL``: what third parties are told to call (payment notify
URLs) and whether cookies are ``Secure``. It comes from configuration only, never from a request's Host
header, which whoever sends the request chooses."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app

from .errors import ConfigError


def normalize_public_base_url(value: object) -> str:
    """``value`` as ``scheme://host[:port][/path]`` without a trailing slash ('' when unset); ConfigError otherwise."""
    text = str(value or "").strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"PUBLIC_BASE_URL {text!r} is not a public address: set it to the URL people and payment "
                          "providers reach this platform at, such as https://meterhub.example.com")
    return text.rstrip("/")


def public_base_url(app: Flask | None = None) -> str:
    """The configured public address ('' when not configured)."""
    return normalize_public_base_url((app or current_app).config.get("PUBLIC_BASE_URL"))


def public_url(path: str, app: Flask | None = None) -> str:
    """``path`` under the public address; '' when no public address is configured."""
    base = public_base_url(app)
    return base + path if base else ""
