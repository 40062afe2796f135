"""The gateway's error types, each carrying its contract status and code.

    GatewayError                    (status, code, message, extra)
    ├── Unauthenticated             401 unauthenticated
    ├── UnknownUpstream             404 unknown_upstream
    ├── BadRequest                  400 bad_request
    ├── PolicyDenied                403 policy_denied
    ├── ApprovalRejected            403 approval_rejected
    ├── WritesFrozen                423 writes_frozen
    │   └── WriteCutOff             423 writes_frozen, outcome unknown (cut off in flight)
    ├── CaptureFailed               502 capture_failed
    ├── JournalUnavailable          503 journal_unavailable
    ├── UpstreamUnreachable         502 upstream_unreachable
    ├── UpstreamTimeout             504 upstream_timeout
    ├── PolicyError                 invalid policy files (not an HTTP error; carries problems)
    └── StartupError                the process cannot start: one line naming the port, the
                                    database (password hidden), the file or the setting

The proxy turns any GatewayError into ``{"error": {"code", "message", ...}}``
in one place (``gateway.proxy.responses``); nothing raises HTTP exceptions.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    decision = "error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class Unauthenticated(GatewayError):
    status, code, decision = 401, "unauthenticated", "deny"


class UnknownUpstream(GatewayError):
    status, code, decision = 404, "unknown_upstream", "deny"


class BadRequest(GatewayError):
    status, code, decision = 400, "bad_request", "deny"


class PolicyDenied(GatewayError):
    status, code, decision = 403, "policy_denied", "deny"


class ApprovalRejected(GatewayError):
    status, code, decision = 403, "approval_rejected", "hold"


class WritesFrozen(GatewayError):
    status, code, decision = 423, "writes_frozen", "frozen"


class WriteCutOff(WritesFrozen):
    """A write the kill switch cut off on its way: it may or may not have landed."""


class CaptureFailed(GatewayError):
    status, code, decision = 502, "capture_failed", "error"


class JournalUnavailable(GatewayError):
    status, code, decision = 503, "journal_unavailable", "error"


class UpstreamUnreachable(GatewayError):
    status, code, decision = 502, "upstream_unreachable", "error"


class UpstreamTimeout(GatewayError):
    status, code, decision = 504, "upstream_timeout", "error"


class PolicyError(Exception):
    """A policy set that cannot be loaded; ``problems`` are ``file:line: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(Exception):
    """``gateway serve`` cannot start; the message is one line that names what failed."""
