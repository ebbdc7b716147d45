"""Billing items (收费项): property fee, rent, service fees; fixed or per m², one-off or recurring."""
