"""Portal tables: people who sign in to the tenant portal, their accounts and pending invitations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow

PORTAL_ROLES = ("owner", "staff")


class PortalUser(TenantMixin, db.Model):
    """A person who signs in to the portal with a phone number (password or one-time code)."""

    __tablename__ = "portal_users"
    __table_args__ = (UniqueConstraint("group_id", "phone"), Index("ix_portal_users_phone", "phone"))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    locale: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Part of the portal session; bumped at sign-out and password change so older sessions end.
    session_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")


class PortalMembership(TenantMixin, db.Model):
    """A portal user's access to one prepaid account: the owner, or staff invited by the owner."""

    __tablename__ = "portal_memberships"
    __table_args__ = (UniqueConstraint("portal_user_id", "account_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    portal_user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8), nullable=False, default="staff")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class PortalInvitation(TenantMixin, db.Model):
    """An invitation of a phone number to an account; accepted by signing in with that phone."""

    __tablename__ = "portal_invitations"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="CASCADE"), index=True)
    phone: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(8), nullable=False, default="staff")
    invited_by: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
