"""Feature modules, each registered as a plugin (a group can enable or disable it)."""
