"""Agent definitions: files, the tool catalog, and the runtime a session pins."""
