"""The gateway's error types: one tree, each type saying who it is for.

    Exception
    ├── GatewayError                    an agent's call refused (status, code, message, extra)
    │   ├── Unauthenticated             401 unauthenticated
    │   ├── UnknownUpstream             404 unknown_upstream
    │   ├── SessionNotFound             404 session_not_found (an MCP session not this agent's)
    │   ├── MethodRefused               405 method_not_allowed
    │   ├── BadRequest                  400 bad_request
    │   ├── BodyTooLarge                413 payload_too_large
    │   ├── PolicyDenied                403 policy_denied
    │   ├── ApprovalRejected            403 approval_rejected
    │   ├── ApprovalPending             409 approval_pending (approval: {answer: error})
    │   ├── AlreadySent                 409 already_sent (a resend of a write its agent left,
    │   │                               whose first try may have landed: not sent again)
    │   ├── WritesFrozen                423 writes_frozen
    │   │   └── WriteCutOff             423 writes_frozen, outcome unknown (cut off in flight)
    │   ├── CaptureFailed               502 capture_failed
    │   ├── UpstreamEncoding            502 upstream_encoding (an answer it cannot decode)
    │   ├── JournalUnavailable          503 journal_unavailable
    │   ├── UpstreamBusy                503 upstream_busy (max_in_flight; Retry-After)
    │   ├── AgentGone                   499 agent_gone (the agent left before its write was
    │   │                               sent: nothing sent; nobody reads the answer)
    │   ├── UpstreamUnreachable         502 upstream_unreachable (nothing reached the upstream)
    │   │   ├── UpstreamLost            502 upstream_unreachable, outcome unknown (sent, cut off)
    │   │   └── ConnectTimeout          504 upstream_timeout (no connection: nothing sent)
    │   └── UpstreamTimeout             504 upstream_timeout, outcome unknown
    ├── AdminError                      an operator's request refused (status, code, message,
    │                                   extra): the admin API, approvals, rollbacks
    ├── OperatorError                   an operator command ends (exit_code, message)
    ├── ApprovalRefused                 a vote the approval state machine refuses (code)
    ├── PolicyError                     invalid policy files (carries problems)
    ├── SettingsError                   settings that cannot be used (carries problems)
    ├── StartupError                    the process cannot start: one line naming the port, the
    │                                   database (password hidden), the file or the setting
    ├── SealError                       a sealed value cannot be opened, or sealing is impossible
    ├── ConditionError                  a policy's ``when`` does not compile or evaluate
    ├── ConnectionLost                  an upstream connection closed mid-response
    ├── AnchorError                     an audit anchor did not take a checkpoint
    ├── DrillError                      a rollback drill could not run
    └── ValueError
        ├── Ambiguous                   a request with more than one reading (a 400 at the edge)
        ├── MessageError                a body that is not one JSON-RPC message
        ├── TemplateError               a path template that does not parse
        ├── DescriptionError            an API description this reader does not understand
        ├── NoteError                   a malformed note, checkpoint or key; a bad signature
        └── AuditKeyError               an audit signing key that is not base64 of 32 bytes

Nothing here imports the rest of the gateway, so the pure core raises these too.

``maybe_sent`` says whether the request may have reached the upstream: a write that
failed with such an error is journaled ``unknown``, never ``failed`` (CONTRACT, "The
life of a write under faults").

The proxy turns any GatewayError into ``{"error": {"code", "message", ...}}``
in one place (``gateway.proxy.responses``), the admin API any AdminError the same
way; nothing raises HTTP exceptions. An upstream signed with ``aws_sigv4`` gets it
as S3's XML error (``s3_xml``), as the JSON protocol's (``aws_json``) for a call that
names its operation in ``X-Amz-Target``, or else as the query APIs' XML one
(``query_xml``).
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    decision = "error"
    maybe_sent = False  # the request may have reached the upstream: outcome unknown
    retry_after: int | None = None  # seconds, sent as Retry-After
    # False: a write that may have landed, with no key the upstream dedupes a resend by;
    # SDKs are told not to resend it (``x-should-retry``, ``stripe-should-retry``)
    retry: bool | None = None

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

    def s3_xml(self, request_id: str) -> bytes:
        """The error as S3 answers one (``aws_sigv4`` upstreams of service ``s3``): S3
        SDKs read ``Code`` and ``Message`` from this and show a bare status for anything
        else."""
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{self._xml_fields()}'
                f"<RequestId>{escape(request_id)}</RequestId></Error>").encode()

    def query_xml(self, request_id: str) -> bytes:
        """The error as AWS's query APIs answer one (EC2, IAM, STS, SNS: ``aws_sigv4``
        upstreams of other services), whose SDKs (botocore) read ``Code`` and ``Message``
        under ``ErrorResponse`` and call S3's ``<Error>`` root Unknown."""
        kind = "Receiver" if self.status >= 500 else "Sender"
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
                f"<Type>{kind}</Type>{self._xml_fields()}</Error>"
                f"<RequestId>{escape(request_id)}</RequestId></ErrorResponse>").encode()

    def aws_json(self) -> bytes:
        """The error as AWS's JSON protocol answers one (DynamoDB, KMS, SQS's JSON: a
        call with ``X-Amz-Target``), whose SDKs (botocore) read the code from ``__type``
        (after its ``#``) and the message from ``message``, and call an XML body's error
        a bare status."""
        fields = {_xml_name(k): v for k, v in self.extra.items() if v is not None}
        return json.dumps({**fields, "__type": f"gateway#{self.aws_code}",
                           "message": self._aws_message, "GatewayCode": self.code}).encode()

    @property
    def aws_code(self) -> str:
        """The code an AWS SDK shows for this error (S3's names for the same statuses)."""
        return _S3_CODES.get(self.status, "InternalError" if self.status >= 500
                             else "InvalidRequest")

    @property
    def _aws_message(self) -> str:
        return f"gateway {self.code}: {self.message}"

    def _xml_fields(self) -> str:
        extra = "".join(f"<{_xml_name(k)}>{escape(str(v))}</{_xml_name(k)}>"
                        for k, v in self.extra.items() if v is not None)
        return (f"<Code>{self.aws_code}</Code><Message>{escape(self._aws_message)}</Message>"
                f"<GatewayCode>{self.code}</GatewayCode>{extra}")


_S3_CODES = {401: "InvalidAccessKeyId", 403: "AccessDenied", 404: "NoSuchUpstream",
             409: "OperationAborted", 423: "AccessDenied", 503: "ServiceUnavailable",
             504: "RequestTimeout", 413: "EntityTooLarge"}


def _xml_name(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_")) or "Detail"


class Unauthenticated(GatewayError):
    status, code, decision = 401, "unauthenticated", "deny"


class UnknownUpstream(GatewayError):
    status, code, decision = 404, "unknown_upstream", "deny"


class SessionNotFound(GatewayError):
    status, code, decision = 404, "session_not_found", "deny"


class MethodRefused(GatewayError):
    status, code, decision = 405, "method_not_allowed", "deny"


class BadRequest(GatewayError):
    status, code, decision = 400, "bad_request", "deny"


class BodyTooLarge(GatewayError):
    status, code, decision = 413, "payload_too_large", "deny"


class PolicyDenied(GatewayError):
    status, code, decision = 403, "policy_denied", "deny"


class ApprovalRejected(GatewayError):
    status, code, decision = 403, "approval_rejected", "hold"


class ApprovalPending(GatewayError):
    """``approval: {answer: error}``: still pending when the wait ended. Not a refusal:
    the call runs once if approved, so the agent must not resend it."""

    status, code, decision = 409, "approval_pending", "hold"


class AlreadySent(GatewayError):
    """A resend of a write its agent left (``gateway.core.resend``) whose first try may
    have landed, or was answered with an answer too large to keep: it is not sent again,
    and SDKs are told not to resend it."""

    status, code, decision = 409, "already_sent", "error"
    retry = False


class WritesFrozen(GatewayError):
    status, code, decision = 423, "writes_frozen", "frozen"


class WriteCutOff(WritesFrozen):
    """A write the kill switch cut off on its way: it may or may not have landed."""

    maybe_sent = True


class CaptureFailed(GatewayError):
    status, code, decision = 502, "capture_failed", "error"


class UpstreamEncoding(GatewayError):
    """An answer compressed in a coding the gateway cannot decode (or that does not
    decode) from an upstream it injects a credential into: an echo of the credential
    could hide in it. The request was sent (the upstream answered)."""

    status, code, decision = 502, "upstream_encoding", "error"
    maybe_sent = True


class JournalUnavailable(GatewayError):
    status, code, decision = 503, "journal_unavailable", "error"


class UpstreamBusy(GatewayError):
    """``max_in_flight`` calls to this upstream are under way; this one was not sent."""

    status, code, decision = 503, "upstream_busy", "error"
    retry_after = 1


class AgentGone(GatewayError):
    """The agent closed its connection while its write waited (for the journal, say):
    the write is not sent, and its entry is ``failed``. A client that gave up retries,
    and both would otherwise land."""

    status, code, decision = 499, "agent_gone", "error"


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


class AdminError(Exception):
    """An operator's request refused, answered by the admin API as
    ``{"error": {"code", "message", ...extra}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class OperatorError(Exception):
    """Ends the command with ``exit_code`` after printing ``message`` to stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


class ApprovalRefused(Exception):
    """A decision that cannot be taken; ``code`` maps to an HTTP status in the admin API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SettingsError(Exception):
    """Settings that cannot be used; ``problems`` are one line each, naming where and which key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class SealError(Exception):
    """A sealed value cannot be opened (no key, wrong key, damaged), or sealing is impossible."""


class ConditionError(Exception):
    """A ``when`` condition that does not compile, or cannot be evaluated on a request."""


class ConnectionLost(Exception):
    """The connection closed before the response was complete."""

    def __init__(self, message: str, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response  # nothing of a response had arrived


class AnchorError(Exception):
    """The anchor did not take the checkpoint (unreachable, refused, malformed answer)."""


class DrillError(Exception):
    """The drill could not run (no sandbox, a listener that did not start...)."""


class Ambiguous(ValueError):
    """A request with more than one reading; its message says which part and why."""


class AmbiguousIdentity(ValueError):
    """Two different agent keys, or an identity header sent twice (400)."""


class MessageError(ValueError):
    """A body that is not one JSON-RPC message (or batch) the gateway can judge."""


class TemplateError(ValueError):
    """A path template that does not parse."""


class DescriptionError(ValueError):
    """The document is not an API description this reader understands (one line)."""


class NoteError(ValueError):
    """A note, checkpoint or key that is malformed, or whose signature does not verify."""


class AuditKeyError(ValueError):
    """The configured signing key is not base64 of 32 bytes."""
