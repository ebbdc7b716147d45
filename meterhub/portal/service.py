"""Portal users and their accounts: claiming accounts after a verified sign-in, invitations of staff by
the owner, members, passwords. Every function runs in the caller's transaction for one group."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFound, ValidationError
from ..i18n import _l
from ..models import utcnow
from ..modules.prepaid.models import PrepaidAccount
from ..tenants import audit
from ..tenants.auth import end_sessions, hash_password
from .auth import normalize_phone
from .models import PORTAL_ROLES, PortalInvitation, PortalMembership, PortalUser

INVITATION_TTL = timedelta(days=14)


def ensure_user(session: Session, group_id: int, phone: str) -> PortalUser:
    """The group's portal user with ``phone``, created when missing."""
    user = session.execute(select(PortalUser).where(PortalUser.group_id == group_id,
                                                    PortalUser.phone == phone)).scalar()
    if user is None:
        user = PortalUser(group_id=group_id, phone=phone, active=True)
        session.add(user)
        session.flush()
    return user


def _member(session: Session, user: PortalUser, account_id: int, role: str) -> None:
    existing = session.execute(select(PortalMembership).where(PortalMembership.portal_user_id == user.id,
                                                              PortalMembership.account_id == account_id)).scalar()
    if existing is None:
        session.add(PortalMembership(group_id=user.group_id, portal_user_id=user.id, account_id=account_id, role=role))
    elif role == "owner":
        existing.role = "owner"


def claim(session: Session, group_id: int, phone: str) -> PortalUser:
    """After ``phone`` proved itself (one-time code): owner of the accounts opened with that phone, member
    of the accounts it was invited to."""
    user = ensure_user(session, group_id, phone)
    for account in session.execute(select(PrepaidAccount).where(PrepaidAccount.group_id == group_id,
                                                                PrepaidAccount.phone == phone,
                                                                PrepaidAccount.status != "closed")).scalars():
        _member(session, user, account.id, "owner")
    now = utcnow()
    for invitation in session.execute(select(PortalInvitation).where(
            PortalInvitation.group_id == group_id, PortalInvitation.phone == phone,
            PortalInvitation.accepted_at.is_(None), PortalInvitation.revoked_at.is_(None),
            PortalInvitation.expires_at > now)).scalars():
        _member(session, user, invitation.account_id, invitation.role)
        invitation.accepted_at = now
    session.flush()
    return user


def memberships(session: Session, user: PortalUser) -> list[tuple[PrepaidAccount, str]]:
    """The user's accounts with their role, by account number."""
    rows = session.execute(select(PrepaidAccount, PortalMembership.role)
                           .join(PortalMembership, PortalMembership.account_id == PrepaidAccount.id)
                           .where(PortalMembership.portal_user_id == user.id)
                           .order_by(PrepaidAccount.number)).all()
    return [(account, role) for account, role in rows]


def invite(session: Session, account: PrepaidAccount, phone: str, role: str, *, invited_by: str) -> PortalInvitation:
    """Invite ``phone`` to ``account`` (accepted when that phone signs in with a code)."""
    if role not in PORTAL_ROLES:
        raise ValidationError(_l("The role must be one of %(roles)s.", roles=", ".join(PORTAL_ROLES)), {"role": "invalid"})
    invitation = PortalInvitation(group_id=account.group_id, account_id=account.id, phone=normalize_phone(phone),
                                  role=role, invited_by=invited_by, expires_at=utcnow() + INVITATION_TTL)
    session.add(invitation)
    session.flush()
    audit.record(session, account.group_id, "portal.invited", actor=invited_by, object_type="prepaid_account",
                 object_id=account.id, detail={"phone_tail": invitation.phone[-4:], "role": role})
    return invitation


def members(session: Session, account: PrepaidAccount) -> list[tuple[PortalUser, str]]:
    rows = session.execute(select(PortalUser, PortalMembership.role)
                           .join(PortalMembership, PortalMembership.portal_user_id == PortalUser.id)
                           .where(PortalMembership.account_id == account.id).order_by(PortalUser.phone)).all()
    return [(user, role) for user, role in rows]


def pending_invitations(session: Session, account: PrepaidAccount) -> list[PortalInvitation]:
    return list(session.execute(select(PortalInvitation).where(
        PortalInvitation.account_id == account.id, PortalInvitation.accepted_at.is_(None),
        PortalInvitation.revoked_at.is_(None), PortalInvitation.expires_at > utcnow())
        .order_by(PortalInvitation.id)).scalars())


def remove_member(session: Session, account: PrepaidAccount, user_id: int, *, actor: str) -> None:
    """Take a staff member off the account (owners stay)."""
    membership = session.execute(select(PortalMembership).where(PortalMembership.account_id == account.id,
                                                                PortalMembership.portal_user_id == user_id)).scalar()
    if membership is None or membership.role == "owner":
        raise NotFound("no such staff member on this account")
    session.delete(membership)
    audit.record(session, account.group_id, "portal.member_removed", actor=actor, object_type="prepaid_account",
                 object_id=account.id, detail={"portal_user_id": user_id})


def set_password(session: Session, user: PortalUser, password: str) -> None:
    """A new password for ``user``; every other session of theirs ends (sign the current one in again)."""
    user.password_hash = hash_password(password)
    end_sessions(user)
