"""A stdio MCP server that answers the handshake and then lists its tools malformed (the
result of ``tools/list`` not what the protocol says: ``{"tools": "nope"}``).

    python tests/support/mcp_servers/malformed_server.py
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        method, ident = message.get("method"), message.get("id")
        if ident is None:
            continue  # a notification
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "malformed", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": "nope"}
        else:
            result = {}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
