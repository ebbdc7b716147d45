"""Imports every core model so the metadata is complete (migrations, tests)."""

from .devices.models import Device, Gateway, Meter  # noqa: F401
from .tenants.audit import AuditEntry  # noqa: F401
from .tenants.models import Building, Floor, Group, Operator, OperatorProperty, Property, Room  # noqa: F401
from .timeseries.models import HealthEvent, MeterLatest, MqttSequence, ReadingRow, TimeseriesState, UsageDaily, UsageHourly, UsageMonthly  # noqa: F401,E501
from .modules.prepaid import schema as _prepaid_schema  # noqa: F401  (ledger, tariffs, commands, prepaid)
from .alarms import models as _alarm_models  # noqa: F401
from .reports import models as _report_models  # noqa: F401
from .modules.apportion import models as _apportion_models  # noqa: F401
from .modules.billing_items import models as _billing_item_models  # noqa: F401
from .modules.postpaid import models as _postpaid_models  # noqa: F401
from .modules.batch import models as _batch_models  # noqa: F401
from .process_events import ProcessEvent  # noqa: F401,E402
from .outbox import OutboxJob  # noqa: F401
from .tenants.login_failures import LoginFailure  # noqa: F401
from .files import StoredFile, StoredFileChunk  # noqa: F401
from .timeseries.property_usage import UsagePropertyDaily, UsageTopMeter  # noqa: F401
from .collector.leases import BusLease, CollectorMember  # noqa: F401
