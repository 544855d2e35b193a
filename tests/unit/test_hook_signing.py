"""Trigger and webhook signatures: HMAC-SHA256 over timestamp and body, a bounded clock
skew, and nothing accepted that was signed with another secret or over other bytes."""

from __future__ import annotations

import hashlib
import hmac

from vigil.activities.hooks import signing

NOW = 1_800_000_000.0


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    headers = signing.signed_headers("s3cret", b'{"a":1}', NOW)
    ts = headers[signing.TIMESTAMP_HEADER]
    expected = hmac.new(b"s3cret", f"{ts}.".encode() + b'{"a":1}', hashlib.sha256).hexdigest()
    assert headers[signing.SIGNATURE_HEADER] == f"sha256={expected}"
    assert (
        signing.check("s3cret", ts, headers[signing.SIGNATURE_HEADER], b'{"a":1}', now=NOW) is None
    )


def test_wrong_secret_other_body_missing_or_stale_headers_are_refused() -> None:
    body = b'{"a":1}'
    h = signing.signed_headers("s3cret", body, NOW)
    ts, sig = h[signing.TIMESTAMP_HEADER], h[signing.SIGNATURE_HEADER]
    assert signing.check("other", ts, sig, body, now=NOW) == "the signature does not match"
    assert signing.check("s3cret", ts, sig, b'{"a":2}', now=NOW) is not None
    assert signing.check("s3cret", None, sig, body, now=NOW) is not None
    assert signing.check("s3cret", ts, None, body, now=NOW) is not None
    assert signing.check("s3cret", "12.5", sig, body, now=NOW) is not None
    assert signing.check("s3cret", ts, sig, body, now=NOW + 301) is not None
    assert signing.check("s3cret", ts, sig, body, now=NOW - 301) is not None
    assert signing.check("s3cret", ts, sig, body, now=NOW + 299) is None
    assert signing.check("s3cret", ts, "sha256=" + "0" * 64, body, now=NOW) is not None
    assert signing.check("s3cret", ts, "ünïcode", body, now=NOW) is not None


def test_the_same_signed_request_has_the_same_digest() -> None:
    assert signing.body_digest("1", b"x") == signing.body_digest("1", b"x")
    assert signing.body_digest("1", b"x") != signing.body_digest("2", b"x")


def test_digits_other_than_ascii_are_no_timestamp() -> None:
    """``str.isdigit`` takes superscripts (``²``) that ``int`` cannot read: an unsigned
    request to any trigger name was a 500, where it is told what a timestamp is."""
    body = b"{}"
    sig = signing.signed_headers("s3cret", body, NOW)[signing.SIGNATURE_HEADER]
    for stamp in ("\xb2", "1\xb9", "\u0661\u0662", "\uff11"):
        said = signing.check("s3cret", stamp, sig, body, now=NOW)
        assert said == f"{signing.TIMESTAMP_HEADER} must be Unix time in seconds", stamp
