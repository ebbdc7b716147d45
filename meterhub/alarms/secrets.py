"""Secrets at rest (SMTP passwords, webhook secrets, SMS keys): AES-256-GCM, masked in UI and API.

The key is ``SECRETS_KEY`` (env ``METERHUB_SECRETS_KEY``) when set, else derived from the app's
``SECRET_KEY``; either way it goes through HKDF-SHA256. Each token is bound to its owner (``context``,
e.g. ``"7:smtp_password"``) as associated data, so a token copied to another group does not decrypt.
Forms show :data:`MASK` instead of a stored secret; posting the mask back keeps the stored value.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from Crypto.Random import get_random_bytes
from flask import current_app

from ..errors import ConfigError

MASK = "--------"
VERSION = "v1"


def secrets_key(config: Mapping[str, object] | None = None) -> bytes:
    """The 32-byte AES key of this installation."""
    config = config if config is not None else current_app.config
    master = config.get("SECRETS_KEY") or config.get("SECRET_KEY")
    if not master:
        raise ConfigError("No SECRETS_KEY or SECRET_KEY configured; set METERHUB_SECRETS_KEY to store secrets")
    return HKDF(str(master).encode(), 32, b"meterhub-secrets-v1", SHA256)  # type: ignore[return-value]


def encrypt(plain: str, context: str, key: bytes | None = None) -> str:
    """An opaque token holding ``plain`` (nonce, ciphertext and tag, base64)."""
    nonce = get_random_bytes(12)
    cipher = AES.new(key or secrets_key(), AES.MODE_GCM, nonce=nonce)
    cipher.update(context.encode())
    body, tag = cipher.encrypt_and_digest(plain.encode())
    return f"{VERSION}:{base64.urlsafe_b64encode(nonce + body + tag).decode()}"


def decrypt(token: str, context: str, key: bytes | None = None) -> str:
    """The secret in ``token``; ValueError when it was tampered with or belongs to another context."""
    version, _, data = token.partition(":")
    if version != VERSION:
        raise ValueError(f"unknown secret format {version!r}")
    raw = base64.urlsafe_b64decode(data.encode())
    cipher = AES.new(key or secrets_key(), AES.MODE_GCM, nonce=raw[:12])
    cipher.update(context.encode())
    return cipher.decrypt_and_verify(raw[12:-16], raw[-16:]).decode()


def merge(stored: Mapping[str, str], posted: Mapping[str, str | None], owner: str,
          key: bytes | None = None) -> dict[str, str]:
    """New encrypted secrets from a form: the mask (or nothing) keeps the stored one, "" deletes it."""
    result = dict(stored)
    for name, value in posted.items():
        if value is None or value == MASK:
            continue
        if value == "":
            result.pop(name, None)
        else:
            result[name] = encrypt(value, f"{owner}:{name}", key)
    return result


def reveal(stored: Mapping[str, str], owner: str, key: bytes | None = None) -> dict[str, str]:
    """Every stored secret decrypted (only for the code that sends; never rendered)."""
    return {name: decrypt(token, f"{owner}:{name}", key) for name, token in stored.items()}


def masked(stored: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """What UI and API show: the mask where a secret is stored, "" where none is."""
    return {name: MASK if stored.get(name) else "" for name in names}
