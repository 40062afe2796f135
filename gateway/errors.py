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
    ├── UpstreamBusy                503 upstream_busy (max_in_flight; Retry-After)
    ├── UpstreamUnreachable         502 upstream_unreachable (nothing reached the upstream)
    │   └── UpstreamLost            502 upstream_unreachable, outcome unknown (sent, cut off)
    ├── UpstreamTimeout             504 upstream_timeout, outcome unknown
    │   └── ConnectTimeout          504 upstream_timeout (no connection: nothing sent)
    ├── PolicyError                 invalid policy files (not an HTTP error; carries problems)
    └── StartupError                the process cannot start: one line naming the port, the
                                    database (password hidden), the file or the setting

``maybe_sent`` says whether the request may have reached the upstream: a write that
failed with such an error is journaled ``unknown``, never ``failed`` (CONTRACT, "The
life of a write under faults").

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
    maybe_sent = False  # the request may have reached the upstream: outcome unknown
    retry_after: int | None = None  # seconds, sent as Retry-After

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

    maybe_sent = True


class CaptureFailed(GatewayError):
    status, code, decision = 502, "capture_failed", "error"


class JournalUnavailable(GatewayError):
    status, code, decision = 503, "journal_unavailable", "error"


class UpstreamBusy(GatewayError):
    """``max_in_flight`` calls to this upstream are under way; this one was not sent."""

    status, code, decision = 503, "upstream_busy", "error"
    retry_after = 1


class UpstreamUnreachable(GatewayError):
    status, code, decision = 502, "upstream_unreachable", "error"


class UpstreamLost(UpstreamUnreachable):
    """The connection broke once the request (or part of it) was written: it may have
    landed. ``head``: the answer's status and headers, when they arrived before the break
    (a create's ``Location`` names what to undo)."""

    maybe_sent = True
    head: tuple[int, list[tuple[str, str]]] | None = None


class UpstreamTimeout(GatewayError):
    status, code, decision = 504, "upstream_timeout", "error"
    maybe_sent = True
    head: tuple[int, list[tuple[str, str]]] | None = None  # as UpstreamLost's


class ConnectTimeout(UpstreamUnreachable):
    """No connection within the limit: nothing was sent. A 504 like a timeout, but of
    the kind "not sent" (as a refused connection), so that whoever tells the two apart
    by class (an approved call: ``failed``, not ``unknown``) gets it right."""

    status, code = 504, "upstream_timeout"
    maybe_sent = False
    head: tuple[int, list[tuple[str, str]]] | None = None


class PolicyError(Exception):
    """A policy set that cannot be loaded; ``problems`` are ``file:line: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(Exception):
    """``gateway serve`` cannot start; the message is one line that names what failed."""
