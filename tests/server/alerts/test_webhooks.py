"""Standard Webhooks signatures: the spec's published vector, rotation, and what a receiver
rejects; cross-checked with the reference library (`standardwebhooks`)."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import webhooks as reference

from server.events import webhooks
from server.events.webhooks import WebhookVerificationError, decode_secret, headers, sign, verify

# The vector of the reference libraries' tests (standard-webhooks/libraries/python/tests)
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC)
OLD, NEW = webhooks.new_secret(), webhooks.new_secret()
BODY = json.dumps({"type": "alert.started", "data": {"label": "falling down"}}).encode()


def test_the_spec_vector():
    assert sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE
    at = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    received = headers(VECTOR_ID, at, VECTOR_BODY, [VECTOR_SECRET])
    assert received == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    verify(VECTOR_BODY, received, [VECTOR_SECRET], now=at)


def test_the_reference_library_accepts_our_signatures_and_we_accept_its():
    now = datetime.now(UTC)  # the reference library checks against the wall clock
    ours = headers("msg_1", now, BODY, [NEW, OLD])
    assert reference.Webhook(NEW).verify(BODY, ours) == json.loads(BODY)
    assert reference.Webhook(OLD).verify(BODY, ours) == json.loads(BODY)
    with pytest.raises(reference.WebhookVerificationError):
        reference.Webhook(webhooks.new_secret()).verify(BODY, ours)
    theirs = reference.Webhook(NEW).sign("msg_2", now, BODY.decode())
    received = {"webhook-id": "msg_2", "webhook-timestamp": str(int(now.timestamp()))}
    verify(BODY, {**received, "webhook-signature": theirs}, [NEW], now=now)


def test_rotation_signs_with_every_secret_newest_first():
    received = headers("msg_1", NOW, BODY, [NEW, OLD])
    signatures = received["webhook-signature"].split(" ")
    stamp = int(NOW.timestamp())
    assert signatures == [sign("msg_1", stamp, BODY, NEW), sign("msg_1", stamp, BODY, OLD)]
    verify(BODY, received, [OLD], now=NOW)  # a receiver not yet moved on
    verify(BODY, received, [NEW], now=NOW)  # and one already moved
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY, received, [webhooks.new_secret()], now=NOW)


def test_a_tampered_body_or_id_fails():
    received = headers("msg_1", NOW, BODY, [NEW])
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY.replace(b"falling", b"sitting"), received, [NEW], now=NOW)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY, {**received, "webhook-id": "msg_2"}, [NEW], now=NOW)


def test_the_timestamp_is_signed_and_must_be_recent():
    received = headers("msg_1", NOW, BODY, [NEW])
    tolerance = webhooks.TOLERANCE_S
    for edge in (timedelta(seconds=tolerance), -timedelta(seconds=tolerance)):
        verify(BODY, received, [NEW], now=NOW + edge)
    for beyond in (timedelta(seconds=tolerance + 1), -timedelta(seconds=tolerance + 1)):
        with pytest.raises(WebhookVerificationError, match="more than 300 s from now"):
            verify(BODY, received, [NEW], now=NOW + beyond)
    moved = {**received, "webhook-timestamp": str(int(NOW.timestamp()) + 1)}
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY, moved, [NEW], now=NOW)


def test_missing_or_malformed_headers_are_named():
    received = headers("msg_1", NOW, BODY, [NEW])
    for name in received:
        partial = {k: v for k, v in received.items() if k != name}
        with pytest.raises(WebhookVerificationError, match=f"missing header {name}"):
            verify(BODY, partial, [NEW], now=NOW)
    with pytest.raises(WebhookVerificationError, match="not an integer"):
        verify(BODY, {**received, "webhook-timestamp": "soon"}, [NEW], now=NOW)
    shouting = {k.upper(): v for k, v in received.items()}  # header names are case-insensitive
    verify(BODY, shouting, [NEW], now=NOW)


def test_only_v1_signatures_count():
    received = headers("msg_1", NOW, BODY, [NEW])
    v2 = received["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY, {**received, "webhook-signature": v2}, [NEW], now=NOW)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, not 5"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes, not 65"),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret, problem):
    with pytest.raises(ValueError, match=problem) as error:
        decode_secret(secret)
    assert secret.removeprefix("whsec_") not in str(error.value)


def test_the_receiver_snippet_in_the_docs_verifies_our_deliveries():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "alerts.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", doc, re.DOTALL)
    assert snippet is not None
    scope: dict = {}
    exec(snippet.group(1), scope)
    verify_delivery = scope["verify_delivery"]
    now = datetime.now(UTC)  # the snippet reads the wall clock, as a receiver does
    received = headers("msg_1", now, BODY, [NEW, OLD])
    assert verify_delivery(BODY, received, OLD)
    assert verify_delivery(BODY, received, NEW)
    assert not verify_delivery(BODY + b" ", received, NEW)
    assert not verify_delivery(BODY, received, webhooks.new_secret())
    stale = headers("msg_1", now - timedelta(seconds=webhooks.TOLERANCE_S + 60), BODY, [NEW])
    assert not verify_delivery(BODY, stale, NEW)
