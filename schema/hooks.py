"""The shapes of inbound triggers and outbound webhooks that cross the workflow boundary.

Pure data like ``schema.payloads``: no SQLAlchemy, no I/O, so workflow code may import it.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookEvent = Literal["approval_requested", "human_asked", "session_ended"]
WEBHOOK_EVENTS: tuple[str, ...] = ("approval_requested", "human_asked", "session_ended")


METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
"""Instance metadata services outside the link-local ranges (AWS's IPv6 endpoint,
Alibaba Cloud's); the others (169.254.169.254 and the like) are link-local."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TRANSLATING = (ipaddress.ip_network("::ffff:0:0:0/96"),)  # IPv4-translated (SIIT)
"""Prefixes an IPv4 address is carried in as the last 32 bits by a translator the
network may run (a stateless translator)."""
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
"""A network's own NAT64 prefixes (RFC 8215): an IPv4 address sits in the last 32 bits or
in middle ones, as the network chose its prefix's length, so which one it reaches cannot be
told: no address in it is taken as public, nor as a webhook's receiver."""
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and reaches (mapped, 6to4, NAT64 with the
    well-known prefix or a network's own, IPv4-translated, the old IPv4-compatible form),
    so that each spelling of 169.254.169.254 is the same."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    translated = ip in _NAT64 or any(ip in net for net in _TRANSLATING)
    if translated or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def unreachable_for_webhooks(address: str, name: str | None = None) -> str | None:
    """Why a webhook is never sent to ``address`` (an IP address in text, which host
    ``name`` resolved to when given), or None.

    Link-local addresses hold cloud instance metadata (``169.254.169.254``: credentials
    of the machine's role) and the like; a webhook's receiver is never there, and a
    delivery's recorded answer would show whoever may list deliveries what it said.
    Multicast and the unspecified address are no receiver either. Loopback and private
    addresses stay allowed (receivers on the same host or network), but for the metadata
    services that answer on one (``METADATA_ADDRESSES``)."""
    try:
        # Trailing dots (``169.254.169.254.``: a name's root) leave the same address.
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]").rstrip("."))
    except ValueError:
        return None  # a name: checked once resolved
    if isinstance(ip, ipaddress.IPv6Address):
        ip = embedded_ipv4(ip) or ip
    for kind, yes in (
        ("local NAT64", ip in LOCAL_NAT64),  # its IPv4 address cannot be told
        ("cloud metadata", ip in METADATA_ADDRESSES),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
    ):
        if yes:
            article = "an" if kind[0] in "aeiou" else "a"
            said = f"{name} resolves to {ip}, {article}" if name else f"{ip} is {article}"
            return f"{said} {kind} address: no webhook is sent there"
    return None


TriggerAction = Literal["start", "message", "wake"]
TRIGGER_ACTIONS: tuple[str, ...] = ("start", "message", "wake")


class NotifyInput(BaseModel):
    """One event of a session to deliver to the webhooks of its agent (the input of the
    notify workflow and of the delivery activity). The URLs and secrets are never in it:
    the activity reads them from the configuration, so only configured URLs are called."""

    model_config = ConfigDict(extra="ignore")

    delivery_id: str
    """Stable for the event (session id and event key): the receiver's idempotency key."""
    session_id: str
    agent_id: str
    agent_version: int | None = None
    """The session's pinned version, whose agent file names webhooks too."""
    event: WebhookEvent
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
    """Small, bounded facts of the event (approval id and tool, the question, the status)."""


class NotifyOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    delivered: int = 0
    rejected: int = 0
    """Webhooks that refused the delivery for good (a 4xx other than 408/429)."""
