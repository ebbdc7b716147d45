"""Benchmarks: `make bench` runs them all; each prints a table and merges its results into results.json."""
