"""The tenancy tree (Group -> Property -> Building -> Floor -> Room) and operators."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask_login import UserMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..models import TenantMixin, Timestamps


class Group(Timestamps, db.Model):
    """A property group (集团): the SaaS tenant and isolation boundary."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    code: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="Asia/Shanghai")
    modules: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    # The largest single top-up (counter, API, online) and the amount above which it must be confirmed.
    topup_max: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False, default=Decimal("50000.00"),
                                               server_default="50000.00")
    topup_confirm_above: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False,
                                                         default=Decimal("5000.00"), server_default="5000.00")


class Property(TenantMixin, Timestamps, db.Model):
    """One site of a group (项目): a mall, a dorm campus."""

    __tablename__ = "properties"
    # (group_id, id) is unique so that a price plan can point at "this property of this group" (migration 0015).
    __table_args__ = (UniqueConstraint("group_id", "code"),
                      UniqueConstraint("group_id", "id", name="uq_properties_group_id_id"))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    address: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="Asia/Shanghai")
    reading_interval_min: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    buildings: Mapped[list[Building]] = relationship(
        back_populates="property", order_by="Building.name", cascade="all, delete-orphan"
    )


class Building(TenantMixin, db.Model):
    """A building (楼栋) of a property."""

    __tablename__ = "buildings"
    __table_args__ = (UniqueConstraint("property_id", "name"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    property: Mapped[Property] = relationship(back_populates="buildings")
    floors: Mapped[list[Floor]] = relationship(
        back_populates="building", order_by="Floor.level", cascade="all, delete-orphan"
    )


class Floor(TenantMixin, db.Model):
    """A floor (楼层) of a building; ``level`` orders floors (negative for basements)."""

    __tablename__ = "floors"
    __table_args__ = (UniqueConstraint("building_id", "level"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), index=True)
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id", ondelete="CASCADE"), index=True)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    building: Mapped[Building] = relationship(back_populates="floors")
    rooms: Mapped[list[Room]] = relationship(
        back_populates="floor", order_by="Room.number", cascade="all, delete-orphan"
    )


class Room(TenantMixin, db.Model):
    """A room, shop or dorm (房间/商铺) where meters serve; has an area in m²."""

    __tablename__ = "rooms"
    __table_args__ = (UniqueConstraint("floor_id", "number"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), index=True)
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id", ondelete="CASCADE"), index=True)
    floor_id: Mapped[int] = mapped_column(ForeignKey("floors.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="shop")
    area_m2: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False, default=Decimal("0"))
    floor: Mapped[Floor] = relationship(back_populates="rooms")

    @property
    def label(self) -> str:
        return f"{self.floor.building.name}-{self.number}"


class Operator(UserMixin, TenantMixin, Timestamps, db.Model):
    """A staff member of a group who signs in to the console."""

    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(32), nullable=False)
    all_properties: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    locale: Mapped[str | None] = mapped_column(String(10))
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Part of every signed-in session; bumped at sign-out and password change so older sessions end.
    session_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    scopes: Mapped[list[OperatorProperty]] = relationship(cascade="all, delete-orphan")

    def get_id(self) -> str:
        return f"{self.group_id}:{self.id}:{self.session_version}"

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.active

    @property
    def property_ids(self) -> set[int]:
        return {s.property_id for s in self.scopes}


class OperatorProperty(TenantMixin, db.Model):
    """One property in an operator's scope (unless the operator holds the whole group)."""

    __tablename__ = "operator_properties"
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True
    )
    property_id: Mapped[int] = mapped_column(
        ForeignKey("properties.id", ondelete="CASCADE"), primary_key=True
    )


def _pin(target: Group | Property, context) -> None:  # noqa: ANN001
    """Keep a loaded group or property in its session for the session's life (a web request's): the identity map
    holds objects weakly, so each ``session.get(Property, id)`` of a request (time zone, names, money pages, the
    portal's figures) went to the database again once the first caller dropped its reference. One entry per row
    (a session that is closed and used again replaces it), so a long-lived session holds at most the table."""
    context.session.info.setdefault("pinned", {})[type(target), target.id] = target


event.listen(Group, "load", _pin)
event.listen(Property, "load", _pin)
