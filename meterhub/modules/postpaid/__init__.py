"""Post-paid bills (后付费): per-period bills from readings × tariff, shares and billing items."""
