"""Creating, finding and revoking API tokens. A token reads ``mh_<prefix>_<secret>``; only its SHA-256
is stored (tokens carry 256 bits of randomness, so a slow hash adds nothing) and it is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..errors import NotFound, ValidationError
from ..i18n import _l
from ..models import utcnow
from ..tenants import audit
from ..tenants.models import Operator
from .models import ApiToken

PREFIX = "mh"
#: Scope -> the permissions it allows (the token's operator must also hold them).
SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({"property.view", "device.view", "money.view", "report.view", "report.finance"}),
    "topup": frozenset({"money.topup"}),
    "commands": frozenset({"device.control"}),
}


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def scope_allows(scopes: list[str], permission: str) -> bool:
    """Whether one of ``scopes`` covers ``permission``."""
    return any(permission in SCOPES.get(scope, frozenset()) for scope in scopes)


@dataclass(frozen=True)
class NewToken:
    """A freshly created token: ``secret`` is the only time the full token exists outside the client."""

    token: ApiToken
    secret: str


def create_token(session: Session, operator: Operator, name: str, scopes: list[str],
                 expires_at: datetime | None = None, *, actor: str, ip: str = "") -> NewToken:
    """Create a token acting with ``operator``'s role and property scope, limited to ``scopes``."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError(_l("Give the token a name of 1 to 100 characters."), {"name": "required"})
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationError(_l("Unknown scopes: %(unknown)s.", unknown=", ".join(unknown)), {"scopes": "invalid"})
    if not scopes:
        raise ValidationError(_l("Choose at least one scope."), {"scopes": "invalid"})
    prefix = secrets.token_hex(4)
    secret = f"{PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(group_id=operator.group_id, operator_id=operator.id, name=name, prefix=prefix,
                     token_hash=token_hash(secret), scopes=sorted(set(scopes)), expires_at=expires_at)
    session.add(token)
    session.flush()
    audit.record(session, operator.group_id, "api_token.created", actor=actor, operator_id=operator.id,
                 object_type="api_token", object_id=token.id, detail={"name": name, "prefix": prefix,
                                                                       "scopes": token.scopes}, ip=ip)
    return NewToken(token, secret)


def lookup(session: Session, secret: str) -> tuple[int, int] | None:
    """(token id, group id) of a presented token, found across groups by its hash; None when unknown."""
    if not secret.startswith(f"{PREFIX}_") or len(secret) > 200:
        return None
    row = session.execute(text("SELECT token_id, group_id FROM meterhub_api_token_lookup(:h)"),
                          {"h": token_hash(secret)}).first()
    return (row.token_id, row.group_id) if row else None


def group_tokens(session: Session, group_id: int) -> list[ApiToken]:
    """Every token of the group, newest first."""
    return list(session.execute(select(ApiToken).where(ApiToken.group_id == group_id)
                                .order_by(ApiToken.id.desc())).scalars())


def revoke(session: Session, group_id: int, prefix: str, *, actor: str, operator_id: int | None,
           ip: str = "") -> ApiToken:
    """Revoke the group's token ``prefix`` (idempotent); later requests with it answer 401."""
    token = session.execute(select(ApiToken).where(ApiToken.group_id == group_id, ApiToken.prefix == prefix)).scalar()
    if token is None:
        raise NotFound(f"API token {prefix} not found")
    if token.revoked_at is None:
        token.revoked_at, token.revoked_by = utcnow(), actor
        audit.record(session, group_id, "api_token.revoked", actor=actor, operator_id=operator_id,
                     object_type="api_token", object_id=token.id, detail={"prefix": prefix}, ip=ip)
    return token
