"""Groups, properties, buildings/floors/rooms, operators, roles, scoping and the audit log."""
