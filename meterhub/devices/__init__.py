"""Gateways, devices and meters: what the platform reads and commands."""
