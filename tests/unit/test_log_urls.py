"""A worker's log does not carry the URLs its HTTP client calls: a webhook's URL may hold
its secret (chat services' hook URLs do), and httpx logs every request's URL at INFO."""

from __future__ import annotations

from pathlib import Path

from tests.support.logs import logged_by

SCRIPT = """
import http.server, threading
import httpx
from vigil.workers.logs import configure, get

class Quiet(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
configure("console", "INFO")
url = f"http://127.0.0.1:{server.server_port}/hooks/T000/B000/s3cr3t-token"
httpx.post(url, json={})
get("vigil.test").info("after the request")
server.shutdown()
"""


def test_a_posted_urls_secret_is_not_logged(tmp_path: Path) -> None:
    text = logged_by(SCRIPT, tmp_path)
    assert "after the request" in text  # INFO lines are logged
    assert "s3cr3t-token" not in text, text
