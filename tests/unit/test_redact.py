"""Redaction finds secrets and personal data, and leaves ordinary text alone."""

from __future__ import annotations

import pytest

from vigil.activities.memory.redact import redact

# A random-looking 40-character secret (made up for this test, of the AWS secret's shape).
OPAQUE = "q7Rz2LmX9vTkP4wB8nJcY1hD6sFgA3eU5oKiN0tV"


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        (
            "mail alice.smith+ops@example.co.uk today",
            "mail [redacted:email] today",
            {"email": 1},
        ),
        (
            "call +44 20 7946 0958, (555) 123-4567 or 555.123.4567",
            "call [redacted:phone], [redacted:phone] or [redacted:phone]",
            {"phone": 3},
        ),
        ("dial +1-202-555-0143 now", "dial [redacted:phone] now", {"phone": 1}),
        (
            "keys sk-proj-abcdefghijklmnopqrstuvwxyz0123 AKIAIOSFODNN7EXAMPLE "
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "keys [redacted:api_key] [redacted:api_key] [redacted:api_key]",
            {"api_key": 3},
        ),
        (
            "slack xoxb-1234567890-abcdefghij and sk-ant-api03-abcdefghijklmnopqrstu",
            "slack [redacted:api_key] and [redacted:api_key]",
            {"api_key": 2},
        ),
        (
            'curl -H "Authorization: Bearer 0123456789abcdef0123456789abcdef" https://x',
            'curl -H "Authorization: Bearer [redacted:bearer]" https://x',
            {"bearer": 1},
        ),
        (
            "Authorization: Basic dXNlcjpwYXNzd29yZA==",
            "Authorization: Basic [redacted:bearer]",
            {"bearer": 1},
        ),
        (
            "use bearer abcDEF123456ghiJKL789 for it",
            "use bearer [redacted:bearer] for it",
            {"bearer": 1},
        ),
        (
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0",
            "token [redacted:jwt]",
            {"jwt": 1},
        ),
        (
            "password: hunter22, api_key='abcd1234efgh' AWS_SECRET_ACCESS_KEY=" + OPAQUE,
            "password: [redacted:secret], api_key='[redacted:secret]' "
            "AWS_SECRET_ACCESS_KEY=[redacted:secret]",
            {"secret": 3},
        ),
        ("found " + OPAQUE + " in a log", "found [redacted:token] in a log", {"token": 1}),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"
            "-----END OPENSSH PRIVATE KEY-----",
            "[redacted:private_key]",
            {"private_key": 1},
        ),
        ("card 4111 1111 1111 1111 on file", "card [redacted:card] on file", {"card": 1}),
    ],
)
def test_finds_and_counts(text: str, expected: str, counts: dict[str, int]) -> None:
    result = redact(text)
    assert result.text == expected
    assert result.counts == counts
    assert result.total == sum(counts.values())


@pytest.mark.parametrize(
    "text",
    [
        "Released 3.11.7 on 2024-01-15 at 12:30:45; build 20240115.",
        "We have 1,234,567 users and 98.6% uptime; order 1234567890.",
        "Upgrade to v1.2.3-rc.1 or 2.0.0b4, see PEP 440.",
        "The 2024-2025 season scored 10-20-30; +5 points; room 101.",
        "Host 192.168.100.200 port 5432, timeout 30s, limit 100.200.300.4000.",
        "artifact 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "commit 462ae8d, uuid 123e4567-e89b-12d3-a456-426614174000",
        "max_tokens=4096, tokens: 1500, token_count=123456",
        "path activities/memory/embedders_and_redaction_tests.py",
        "AbstractSingletonProxyFactoryBeanImplementation2024 getUserAccountPreferencesV2",
        "a card-like 4111 1111 1111 1112 that fails the Luhn check",
        "The secret is out, and the password policy needs 12 characters.",
        "password: true, token: none",
        "Unix time 1700000000, epoch ms 1700000000123.",
        "Ask at the front desk (room 555) about it.",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert result.counts == {}


def test_is_idempotent() -> None:
    once = redact("mail bob@example.org, key sk-abcdefghijklmnopqrstuvwxyz12, +1 415 555 2671")
    twice = redact(once.text)
    assert twice.text == once.text
    assert twice.counts == {}
