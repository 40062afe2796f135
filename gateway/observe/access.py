"""The access log: one JSON line per agent call (``access_log: true``)."""

from __future__ import annotations

import json
import logging

from gateway.core.model import iso, utcnow
from gateway.observe.seam import CallRecord

ACCESS_LOG = "gateway.access"


class AccessLog:
    """One JSON line per agent call, on the ``gateway.access`` logger (stderr when serving).

    The path is logged without its query (where secrets travel); the agent is
    its configured name, null when the call was not authenticated.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(ACCESS_LOG)

    def write(self, record: CallRecord, seconds: float) -> None:
        self._log.info(json.dumps({
            "at": iso(utcnow()), "request_id": record.request_id, "agent": record.agent,
            "upstream": record.upstream, "method": record.method, "path": record.path,
            "decision": record.decision, "status": record.status,
            "ms": round(seconds * 1000, 3)}, ensure_ascii=False, separators=(",", ":")))
