"""Online payment: provider plugins (a sandbox provider and WeChat Pay v3), orders, signed asynchronous
callbacks that top up the ledger idempotently on the provider's transaction id, and reconciliation."""
