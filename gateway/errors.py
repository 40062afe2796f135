"""The gateway's error types, each carrying its contract status and code.

    GatewayError                    (status, code, message, extra)
    ├── Unauthenticated             401 unauthenticated
    ├── UnknownUpstream             404 unknown_upstream
    ├── BadRequest                  400 bad_request
    ├── PolicyDenied                403 policy_denied
    ├── ApprovalRejected            403 approval_rejected
    ├── ApprovalPending             409 approval_pending (approval: {answer: error})
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
in one place (``gateway.proxy.responses``); nothing raises HTTP exceptions. An
upstream signed with ``aws_sigv4`` (S3) gets it as S3's XML error (``s3_xml``).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape


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

    def s3_xml(self, request_id: str) -> bytes:
        """The error as S3 answers one (``aws_sigv4`` upstreams): S3 SDKs read ``Code``
        and ``Message`` from this and show a bare status for anything else."""
        code = _S3_CODES.get(self.status, "InternalError" if self.status >= 500
                             else "InvalidRequest")
        message = f"gateway {self.code}: {self.message}"
        extra = "".join(f"<{_xml_name(k)}>{escape(str(v))}</{_xml_name(k)}>"
                        for k, v in self.extra.items() if v is not None)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message><GatewayCode>{self.code}</GatewayCode>"
                f"{extra}<RequestId>{escape(request_id)}</RequestId></Error>").encode()


_S3_CODES = {401: "InvalidAccessKeyId", 403: "AccessDenied", 404: "NoSuchUpstream",
             409: "OperationAborted", 423: "AccessDenied", 503: "ServiceUnavailable",
             504: "RequestTimeout", 413: "EntityTooLarge"}


def _xml_name(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_")) or "Detail"


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


class ApprovalPending(GatewayError):
    """``approval: {answer: error}``: still pending when the wait ended. Not a refusal:
    the call runs once if approved, so the agent must not resend it."""

    status, code, decision = 409, "approval_pending", "hold"


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
