"""Broker passwords: generated, hashed as Mosquitto's ``$7$`` (PBKDF2-HMAC-SHA512), verified in constant time.

``$7$<iterations>$<base64 salt>$<base64 hash>`` is what ``mosquitto_passwd`` writes (12-byte salt, 64-byte
hash), so one hash serves the embedded broker's plugin and a Mosquitto password file alike. The passwords are
random (160 bits), so the iteration count only has to make a leaked hash useless, not slow down guessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

ITERATIONS = 10_000
SALT_BYTES = 12
MAX_ITERATIONS = 1_000_000  # a hash asking for more is refused (it would stall the broker)


def new_password() -> str:
    """A random broker password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash of ``password`` with a fresh salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str | None, hashed: str | None) -> bool:
    """True when ``password`` matches the ``$7$`` hash ``hashed``; False for anything malformed or missing."""
    if not password or not hashed:
        return False
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not 1 <= iterations <= MAX_ITERATIONS or not expected:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
    return hmac.compare_digest(digest, expected)
