"""Webhook payloads: the JSON and Slack formats, and the signature."""

from __future__ import annotations

import hashlib
import hmac
import json

from gateway.services.notify import Notifier, WebhookSettings, sign

CALL = {"id": "a1", "method": "POST", "upstream": "crm", "path": "/deals", "agent": "bot",
        "rule": "big-deal", "required_approvals": 2, "status": "pending", "decided_by": None}


def test_json_payload_carries_the_event_and_the_call() -> None:
    notifier = Notifier(WebhookSettings(url="http://127.0.0.1:1/hook"))
    body = json.loads(notifier.payload("approval.held", CALL))
    assert body == {"event": "approval.held", "approval": CALL}


def test_slack_format_is_one_line_of_text() -> None:
    notifier = Notifier(WebhookSettings(url="http://127.0.0.1:1/hook", format="slack"))
    held = json.loads(notifier.payload("approval.held", CALL))
    assert set(held) == {"text"}
    assert "bot wants POST crm/deals (rule big-deal)" in held["text"]
    assert "needs 2 approver(s)" in held["text"]
    decided = json.loads(notifier.payload("approval.executed",
                                          {**CALL, "status": "executed", "decided_by": "alice"}))
    assert decided["text"].endswith("is executed (by alice)")


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    expected = hmac.new(b"k", b"1700000000." + b"{}", hashlib.sha256).hexdigest()
    assert sign("k", "1700000000", b"{}") == f"sha256={expected}"
