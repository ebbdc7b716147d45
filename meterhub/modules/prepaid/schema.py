"""Imports every model of the money stack (ledger, tariffs, commands, prepaid) for complete metadata."""

from ...commands.models import Command  # noqa: F401
from ...ledger.models import Entry, LedgerAccount, LedgerBalance, Transfer  # noqa: F401
from ...tariffs.models import Tariff, TariffAssignment, TariffPeriod, TariffTier, TariffVersion  # noqa: F401
from .models import Charge, MeterState, PrepaidAccount, PrepaidEvent  # noqa: F401
