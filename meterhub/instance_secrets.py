"""Secrets generated once into the instance folder (mode 0600), for every process of the instance to share."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ConfigError


def instance_secret(instance_path: str | Path, name: str, nbytes: int = 32) -> str:
    """The secret stored in ``<instance>/<name>``, created on first use (URL-safe text, ``nbytes`` of entropy).

    Creation is atomic (a private temporary file linked into place), so processes starting together agree.
    """
    path = Path(instance_path) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(nbytes) + "\n")
            try:
                os.link(scratch, path)
            except FileExistsError:
                pass  # another process won the race: use its secret
        finally:
            scratch.unlink(missing_ok=True)
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"{path} is empty: delete it to generate a new secret, or restore it from a backup")
    return value
