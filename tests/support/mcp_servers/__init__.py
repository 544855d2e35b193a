"""Real MCP servers written with the ``mcp`` SDK, run as subprocesses by the tests."""
