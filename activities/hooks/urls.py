"""Which URLs a webhook may be configured with (``vigil webhook add``, an agent file's
``[[webhooks]]``) and is posted to (``activities.hooks.delivery``)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from vigil.schema.hooks import unreachable_for_webhooks


def url_problem(url: str) -> str | None:
    """Why ``url`` is no webhook's, or None: one the delivery cannot parse, or whose host
    is written as an address no webhook is sent to (a link-local one: cloud metadata). A
    host name is checked when a delivery resolves it."""
    try:
        parts = httpx.URL(url)  # as the delivery parses it
        host = urlsplit(url).hostname or ""
    except (ValueError, httpx.InvalidURL) as exc:
        return f"not a valid URL: {exc}"
    if parts.port is not None and not 0 < parts.port < 65536:
        # httpx takes any number; the POST then failed at connect, every attempt.
        return f"not a valid URL: port {parts.port} is outside 1-65535"
    return unreachable_for_webhooks(host)
