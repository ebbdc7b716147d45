"""One of each operations object (apportioning rule and posted run, billing item, batch, bill) in property P1
of a test tenant, for the isolation matrix (``Tenant.operations``)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from meterhub.db import service_session
from meterhub.models import utcnow
from meterhub.modules.apportion.posting import post_run
from meterhub.modules.apportion.rules import create_rule
from meterhub.modules.apportion.statement import month_bounds
from meterhub.modules.batch.service import create_batch
from meterhub.modules.billing_items.service import create_item
from meterhub.modules.postpaid import service as postpaid
from meterhub.modules.prepaid import accounts
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion
from tests.prepaid.conftest import add_meters, write_readings


def operations_objects(tenant) -> dict[str, int]:  # noqa: ANN001
    """Create the objects; returns their ids by URL parameter name."""
    g, p = tenant.group_id, tenant.property_id
    start, end = month_bounds("Asia/Shanghai", 2026, 1)
    with tenant.app.app_context(), service_session() as s:
        parent, own, other = add_meters(s, g, p, tenant.gateway_id, tenant.room_id, 3)
        tariff = tariffs.create_tariff(s, g, f"Ops {uuid.uuid4().hex[:6]}")
        tariffs.add_version(s, tariff, datetime(2020, 1, 1, tzinfo=UTC), PlanVersion("flat",
                                                                                   tariffs.flat_prices(Decimal("1"))))
        tariffs.assign(s, g, "property", p, tariff)
        write_readings(s, g, [(m, ts, Decimal(v)) for m in (parent, own, other)
                              for ts, v in ((start - timedelta(days=1), "0"), (end, "50"))])
    with tenant.app.app_context(), service_session() as s:
        account = accounts.create_account(s, g, p, [own], room_id=tenant.room_id, customer_name=tenant.marker,
                                          actor="t")
        account.opened_at = start - timedelta(days=30)
        billed = accounts.create_account(s, g, p, [other], customer_name=tenant.marker, actor="t")
        billed.opened_at = start - timedelta(days=30)
        rule = create_rule(s, g, p, name=f"Ops {tenant.marker}", parent_meter_id=parent, sub_meter_ids=[],
                           method="ratio", tariff_id=tariff.id, members=[(account.id, "1")], actor="t")
        run = post_run(s, g, rule.id, start, end, actor="t")
        item = create_item(s, g, p, name=f"Fee {tenant.marker}", rate="1.00", start_date=date(2026, 1, 1),
                           account_ids=[account.id], actor="t")
        batch = create_batch(s, g, p, "read_now", {}, {"meter_ids": [own]}, at=utcnow() + timedelta(days=365),
                             actor="t")
        postpaid.make_postpaid(s, g, billed.id, actor="t")
        bill = postpaid.generate_bill(s, g, billed.id, date(2026, 1, 1), date(2026, 2, 1), actor="t")
        return {"rule_id": rule.id, "run_id": run.id, "item_id": item.id, "batch_id": batch.id, "bill_id": bill.id}
