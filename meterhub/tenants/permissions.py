"""The permission catalogue and the roles, each a set of permissions (DESIGN.md, Tenancy)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

PERMISSIONS: dict[str, object] = {
    "property.view": _l("See properties, buildings, rooms"),
    "property.manage": _l("Create and edit properties, buildings, floors, rooms"),
    "device.view": _l("See gateways, devices, meters and readings"),
    "device.manage": _l("Onboard and edit gateways, devices, meters"),
    "device.control": _l("Switch relays and valves, keep-power, read now"),
    "money.view": _l("See balances, top-ups, refunds, ledger"),
    "money.topup": _l("Top up accounts at the counter"),
    "money.refund": _l("Refund accounts"),
    "money.reverse": _l("Reverse a wrong top-up"),
    "account.manage": _l("Open and close accounts, swap meters"),
    "tariff.manage": _l("Edit price plans and assignments"),
    "report.view": _l("See usage reports"),
    "report.finance": _l("See sales and revenue reports"),
    "alarm.ack": _l("Acknowledge alarms"),
    "batch.run": _l("Run batch operations"),
    "operator.manage": _l("Manage operators and their scopes"),
    "audit.view": _l("See and export the audit log"),
    "group.manage": _l("Edit group settings and modules"),
}

ALL = frozenset(PERMISSIONS)
VIEW = frozenset(p for p in PERMISSIONS if p.endswith(".view"))

ROLES: dict[str, frozenset[str]] = {
    "group_admin": ALL,
    "group_finance": frozenset({"property.view", "money.view", "report.view", "report.finance", "audit.view"}),
    "property_manager": ALL - {"operator.manage", "group.manage", "audit.view"},
    "cashier": frozenset({"property.view", "money.view", "money.topup", "money.refund"}),
    "electrician": frozenset({"property.view", "device.view", "device.manage", "device.control", "alarm.ack"}),
    "auditor": VIEW | {"report.finance"},
}

ROLE_LABELS: dict[str, object] = {
    "group_admin": _l("Group admin"),
    "group_finance": _l("Group finance"),
    "property_manager": _l("Property manager"),
    "cashier": _l("Cashier"),
    "electrician": _l("Electrician"),
    "auditor": _l("Auditor"),
}

# Roles that always cover the whole group (HQ roles).
GROUP_WIDE_ROLES = frozenset({"group_admin", "group_finance"})


def role_permissions(role: str) -> frozenset[str]:
    """The permissions of ``role``; an unknown role has none."""
    return ROLES.get(role, frozenset())
