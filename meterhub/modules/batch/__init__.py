"""Batch operations (批量操作): one action over many meters, now or scheduled, with per-meter results."""
