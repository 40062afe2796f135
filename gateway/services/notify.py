"""Webhook notifications for held calls: sent in the background, never in the way.

When a call is held and when it is decided, a JSON payload is POSTed to the
configured URL, signed with HMAC-SHA256 over ``timestamp.body`` using the
shared secret (``X-Gateway-Signature: sha256=HEX``, ``X-Gateway-Timestamp``),
so a receiver can check origin and freshness. ``format: slack`` sends a
Slack-style incoming-webhook ``{"text": ...}`` instead. Deliveries go through a
bounded queue and a worker with retries; the proxy only ever enqueues.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from gateway.core.redact import redact_json
from gateway.settings import WebhookSettings

log = logging.getLogger("gateway.notify")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def slack_text(event: str, call: dict[str, Any]) -> str:
    what = f"{call['method']} {call['upstream']}{call['path']}"
    if event == "approval.held":
        return (f":raised_hand: {call['agent']} wants {what} (rule {call['rule']}); "
                f"approval {call['id']} needs {call['required_approvals']} approver(s)")
    by = call.get("decided_by") or "the gateway"
    return f"approval {call['id']} ({what}) is {call['status']} (by {by})"


class Notifier:
    def __init__(self, settings: WebhookSettings | None, queue_size: int = 1000) -> None:
        self.settings = settings
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0

    def start(self) -> None:
        if self.settings is not None and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def publish(self, event: str, call: dict[str, Any]) -> None:
        """Enqueue; drops (and counts) when the queue is full rather than block."""
        if self.settings is None:
            return
        try:
            self._queue.put_nowait((event, call))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook queue full; dropped %s for %s", event, call.get("id"))

    def payload(self, event: str, call: dict[str, Any]) -> bytes:
        assert self.settings is not None
        call = redact_json(call)  # views are redacted already; a receiver is one more view
        if self.settings.format == "slack":
            body: dict[str, Any] = {"text": slack_text(event, call)}
        else:
            body = {"event": event, "approval": call}
        return json.dumps(body, separators=(",", ":")).encode()

    async def _run(self) -> None:
        assert self.settings is not None
        async with httpx.AsyncClient(timeout=self.settings.timeout) as client:
            while True:
                event, call = await self._queue.get()
                await self._deliver(client, event, call)

    async def _deliver(self, client: httpx.AsyncClient, event: str, call: dict[str, Any]) -> None:
        assert self.settings is not None
        body = self.payload(event, call)
        for attempt in range(1, self.settings.retries + 2):
            timestamp = str(int(time.time()))
            headers = {"content-type": "application/json", "x-gateway-event": event,
                       "x-gateway-timestamp": timestamp}
            if self.settings.secret:
                headers["x-gateway-signature"] = sign(self.settings.secret, timestamp, body)
            try:
                response = await client.post(self.settings.url, content=body, headers=headers)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt <= self.settings.retries:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 10))  # backoff between tries
            log.warning("webhook %s for %s failed (%s), attempt %d", event, call.get("id"),
                        problem, attempt)
        self.dropped += 1
