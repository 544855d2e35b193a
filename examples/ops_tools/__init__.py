"""An example tool package for vigil: one Python tool and one small MCP server."""
