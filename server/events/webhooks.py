"""Standard Webhooks signatures (https://www.standardwebhooks.com): signing and verifying.

A delivery carries three headers: `webhook-id` (the same on every attempt of one delivery, so
receivers drop duplicates), `webhook-timestamp` (integer Unix seconds of this attempt) and
`webhook-signature`: space-separated `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
one per secret. Secrets are `whsec_<base64 of 24..64 random bytes>`. Signing with every secret
of a destination, the newest first, lets a receiver move to a new secret without a window in
which it rejects deliveries. `verify` is what a receiver does; the server uses it only in tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_secrets
from collections.abc import Mapping, Sequence
from datetime import datetime

PREFIX = "whsec_"
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64  # the spec's recommended key sizes
TOLERANCE_S = 300  # the spec's suggested replay window, both ways


class WebhookVerificationError(Exception):
    """A delivery failed verification; the message says why (never a secret)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError (without the secret) if malformed."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"must start with {PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"must be {PREFIX} followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)} "
            f"(make one with: python -c 'from server.events.webhooks import new_secret; "
            f"print(new_secret())')"
        )
    return key


def new_secret() -> str:
    """A fresh random secret, 32 bytes."""
    return PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


def sign(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One signature, `v1,<base64>`, of `{msg_id}.{timestamp}.{body}`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(msg_id: str, now: datetime, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with every secret in order."""
    timestamp = int(now.timestamp())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(msg_id, timestamp, body, s) for s in secrets),
    }


def verify(
    body: bytes,
    received: Mapping[str, str],
    secrets: Sequence[str],
    now: datetime,
    tolerance_s: float = TOLERANCE_S,
) -> None:
    """Check a delivery as a receiver does: the three headers are there, the timestamp is
    within `tolerance_s` of `now`, and one `v1` signature matches one of `secrets`.
    Raises WebhookVerificationError saying which check failed."""
    lower = {k.lower(): v for k, v in received.items()}
    try:
        msg_id, stamp, signatures = (
            lower[h] for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        )
    except KeyError as e:
        raise WebhookVerificationError(f"missing header {e.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not an integer: {stamp!r}") from None
    if abs(now.timestamp() - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp {timestamp} is more than {tolerance_s:g} s from now"
        )
    expected = {sign(msg_id, timestamp, body, s) for s in secrets}
    for candidate in signatures.split():
        # compare_digest against each: a constant-time comparison, whatever matches
        if any(hmac.compare_digest(candidate, e) for e in expected):
            return
    raise WebhookVerificationError("no signature matches a known secret")
