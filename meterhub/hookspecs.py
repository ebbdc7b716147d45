"""Every meterhub plugin hook. Call hooks with keyword arguments only; arguments may be added, never
renamed or removed. Each hook is documented in docs/plugin_hooks.md (a test checks this)."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("meterhub")
hookimpl = pluggy.HookimplMarker("meterhub")


# --- Registration (called once at startup; results are checked by the core) -----------------------


@hookspec
def register_drivers():
    """Return a list of ``meterhub.driver.Driver`` instances; driver keys must be unique."""


@hookspec
def register_modules():
    """Return feature-module descriptors: dicts with key, name, description, default_enabled."""


@hookspec
def register_blueprints():
    """Return Flask blueprints to register on the web app."""


@hookspec
def web_app(app):
    """Set up a web layer on the Flask ``app`` (sign-in, pages, error pages, template helpers, translations), once,
    before ``register_blueprints``; the console and tenant portal (``webui.plugin``) implement it."""


@hookspec
def menu_items(operator):
    """Return console menu entries (dicts: label, endpoint, permission, order, section — monitor, money, devices,
    reports or settings) visible to ``operator``."""


@hookspec
def register_jobs():
    """Return periodic jobs: dicts with name, interval (seconds), callable (dotted path) and optionally queue
    (default ``periodic``: its own worker, so notifications and exports never delay charging; ``bulk`` for long
    work nobody waits for, such as rollups, served after every other queue; see ``redis_conn.QUEUES``)."""


@hookspec
def register_notifiers():
    """Return notifier objects (email, SMS, webhook, …) keyed by their ``key`` attribute."""


@hookspec
def register_payment_providers():
    """Return payment provider objects for the tenant portal."""


@hookspec
def register_reports():
    """Return ``ReportDefinition`` objects (key, name, permission, columns, rows generator, filters it applies)."""


# --- Lifecycle ------------------------------------------------------------------------------------


@hookspec
def startup(app):
    """Called once after the Flask ``app`` is configured; may not mutate globals."""


# --- Events (called after the database commit; failures are logged, never propagated) ------------


@hookspec
def reading_stored(group_id, meter_ids):
    """Readings for ``meter_ids`` of group ``group_id`` were committed."""


@hookspec
def balance_changed(group_id, account_id, balance):
    """Account ``account_id`` of ``group_id`` has a new ``balance`` (Decimal)."""


@hookspec
def command_done(command):
    """A device ``command`` reached a final state (confirmed, failed or expired)."""


@hookspec
def alarm_raised(alarm):
    """An ``alarm`` was raised (active)."""


@hookspec
def health_changed(group_id, transitions):
    """Meters/devices/gateways of ``group_id`` went offline or came back (``HealthTransition`` list)."""


# --- Notifications (registration, called when notifiers are looked up) -----------------------------


@hookspec
def register_sms_providers():
    """Return SMS-gateway provider objects (``key``, ``label``, ``send_sms(phone, text, settings, secrets)``)."""
