"""Cryptography of payment callbacks (pycryptodome): RSA-SHA256 (PKCS#1 v1.5) signatures over
``timestamp\\nnonce\\nbody\\n`` as in WeChat Pay v3, AES-256-GCM for encrypted resources, and key helpers."""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

CENTS = Decimal(100)


def generate_rsa_pem(bits: int = 2048) -> tuple[str, str]:
    """A new key pair: (private PEM, public PEM)."""
    key = RSA.generate(bits)
    return key.export_key().decode(), key.publickey().export_key().decode()


def signed_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The exact bytes signed in a notification: three lines, each ending with a newline."""
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


def rsa_sign(private_pem: str, message: bytes) -> str:
    """Base64 RSA-SHA256 signature of ``message``."""
    key = RSA.import_key(private_pem)
    return base64.b64encode(pkcs1_15.new(key).sign(SHA256.new(message))).decode()


def rsa_verify(public_pem: str, message: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` signs ``message`` with the key in ``public_pem`` (a public key or an X.509
    certificate); malformed input is simply not valid."""
    try:
        key = RSA.import_key(public_pem)
        signature = base64.b64decode(signature_b64, validate=True)
        pkcs1_15.new(key).verify(SHA256.new(message), signature)
    except (ValueError, TypeError, IndexError, binascii.Error):
        return False
    return True


def aes_gcm_encrypt(key: bytes, nonce: bytes, associated_data: bytes, plaintext: bytes) -> str:
    """Base64 of ciphertext followed by the 16-byte tag (the WeChat Pay ``resource.ciphertext`` layout)."""
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(associated_data)
    body, tag = cipher.encrypt_and_digest(plaintext)
    return base64.b64encode(body + tag).decode()


def aes_gcm_decrypt(key: bytes, nonce: bytes, associated_data: bytes, ciphertext_b64: str) -> bytes:
    """Plaintext of a ``resource``; ValueError when the key, nonce, data or tag do not match."""
    try:
        raw = base64.b64decode(ciphertext_b64, validate=True)
    except binascii.Error as err:
        raise ValueError("ciphertext is not base64") from err
    if len(raw) < 17:
        raise ValueError("ciphertext too short")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(associated_data)
    return cipher.decrypt_and_verify(raw[:-16], raw[-16:])


def to_fen(amount: Decimal) -> int:
    """Yuan with two decimals -> integer fen."""
    return int((amount * CENTS).to_integral_exact())


def from_fen(fen: int) -> Decimal:
    return (Decimal(fen) / CENTS).quantize(Decimal("0.01"))
