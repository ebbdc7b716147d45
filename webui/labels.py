"""Display labels for stored values: the registry lives in the core (:mod:`meterhub.labels`) so that PDFs,
exports and stored messages use the same labels as the pages; templates use it as the ``|label`` filter."""

from meterhub.labels import LABELS, label

__all__ = ["LABELS", "label"]
