"""What makes a call a resend of another, and what a resend of a write gets (pure).

An agent whose own timeout is shorter than the time a call takes closes its
connection and, like most SDKs, sends the call again. The gateway must not carry
out a change twice because of that. A resend is the same call from the same agent
and run: the same upstream, method, target and body, and the same idempotency key
(the agent's own, if it sent one). Other headers are left out: SDKs change them
between tries (a retry count, a request id). Two calls meant to run twice carry
different idempotency keys, or the second is sent after the first was answered.

A held call its agent left is rejoined by the resend (``gateway.core.approvals``).
A write its agent left while it was on its way to the upstream is marked as left
(``LeftWrite``); its resend is not sent again but waits for the first one's answer
and gets it (``answered``), or is told that the first one's outcome is unknown, so
that it may have landed (``unknown``); a write that surely did not leave
(``not_sent``) lets its resend be sent. A mark is rejoined once at a time: a resend
that leaves in turn marks the write again for the next.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

REJOIN_WINDOW = timedelta(hours=1)  # after that, a call like a left one is a new call
IDEMPOTENCY_KEY = "idempotency-key"  # the agent's own key, where the policy names none
SENDING, ANSWERED, UNKNOWN, NOT_SENT = "sending", "answered", "unknown", "not_sent"
SETTLED = (ANSWERED, UNKNOWN, NOT_SENT)


def key_of(agent: str, run: str | None, upstream: str, method: str, raw_path: str,
           query: str, body: bytes, key: str | None) -> str:
    """The key every resend of this call has (see the module's docstring)."""
    canonical = json.dumps([agent, run, upstream, method, raw_path, query,
                            base64.b64encode(body).decode(), key], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def own_key(keyed: str | None, headers: list[tuple[str, str]]) -> str | None:
    """The agent's own idempotency key: its value of the policy's header ``keyed``, else
    of ``Idempotency-Key`` (``headers``: lower-case names, as a call has them)."""
    name = keyed or IDEMPOTENCY_KEY
    return next((value for header, value in headers if header == name), None)


@dataclass(frozen=True, slots=True)
class LeftWrite:
    """A write whose agent left before its answer: its journal entry, the key of its
    resends, and, once it is settled, how (``state``) and the upstream's answer as
    ``gateway.services.held_calls.stored_response`` keeps it (``answered``)."""

    entry_id: str
    key: str
    agent: str
    left_at: datetime
    state: str = SENDING
    response: dict[str, Any] | None = None

    @property
    def settled(self) -> bool:
        return self.state in SETTLED
