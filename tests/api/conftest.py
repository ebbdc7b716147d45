"""API tests use the shared helpers in tests/api/world.py."""
