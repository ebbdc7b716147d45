"""Time series: readings storage, batched COPY ingest, usage rollups, one query API, device health."""
