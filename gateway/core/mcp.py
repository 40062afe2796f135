"""MCP messages and tool calls as the core sees them (pure).

An MCP upstream is reached with JSON-RPC over streamable HTTP. The proxy's
reader turns each message into a call the pipeline judges; this module holds
what needs no I/O: strict decoding of a message, the view of a ``tools/call``
(tool name and arguments), capture and undo targets expanded from the rule's
templates (``{arguments.id}``), the prior state read from a tool result, and
the JSON-RPC response found in a JSON or SSE body.

A capture or drift target is journaled as text: ``{"tool": ..., "arguments": ...}``
in canonical JSON (a REST target is a path, which starts with ``/``).

>>> expand({"id": "{arguments.id}", "note": "was {prior.plan}"},
...        {"arguments": {"id": 7}, "prior": {"plan": "pro"}})
{'id': 7, 'note': 'was pro'}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.core.body import json_body, media_type
from gateway.core.policy.mcp_schema import TOOLS_CALL, McpRule, ToolCapture, ToolUndo
from gateway.core.redact import REDACTED, redact_json, redact_quoted, secret_values
from gateway.errors import Ambiguous, MessageError

JSON = "application/json"
SSE = "text/event-stream"
_WHOLE = re.compile(r"^\{([^{}]+)\}$")
_PART = re.compile(r"\{([^{}]+)\}")
MAX_DEPTH = 64
ANY_ID: Any = object()  # response_in: the first response, whatever its id


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message of an agent's POST.

    ``method`` is None for a response (an answer to a server's request);
    ``id`` is None for a notification. ``raw`` is the message's own bytes:
    what is forwarded, held and digested.
    """

    raw: bytes
    value: dict[str, Any]
    method: str | None
    id: Any
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    http: str = "POST"  # GET (the server's stream) and DELETE (end of session) carry no message

    @property
    def is_request(self) -> bool:
        return self.method is not None and "id" in self.value


def decode(body: bytes, exact: bool = False) -> Any:
    """Strict JSON with one reading (``gateway.core.json_body``): duplicate or
    case-twin keys, NUL in keys, lone surrogates, NaN/Infinity, numbers past the float
    range and deep nesting are refused; with ``exact`` (a ``when`` compares arguments),
    numbers a double does not hold too."""
    if not body.strip():
        raise MessageError("the body is not JSON: it is empty")
    try:
        return json_body(body, "application/json", exact=exact)
    except Ambiguous as exc:
        raise MessageError(str(exc)) from None


def message(value: Any, raw: bytes | None = None) -> Message:
    """One decoded JSON-RPC message; a ``tools/call`` must name its tool."""
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise MessageError("a JSON-RPC 2.0 message is an object with \"jsonrpc\": \"2.0\"")
    method = value.get("method")
    if method is not None and not isinstance(method, str):
        raise MessageError("method must be a string")
    if raw is None:
        raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if method != TOOLS_CALL:
        return Message(raw, value, method, value.get("id"))
    params = value.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        raise MessageError("tools/call needs params.name, the tool")
    arguments = params.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise MessageError("tools/call params.arguments must be an object")
    return Message(raw, value, method, value.get("id"), params["name"], arguments)


def messages(body: bytes, exact: bool = False) -> tuple[list[Message], bool]:
    """The messages of a POST body and whether it was a batch (2025-03-26 allows them)."""
    value = decode(body, exact)
    if isinstance(value, list):
        if not value:
            raise MessageError("an empty batch")
        return [message(item) for item in value], True
    return [message(value, body)], False


# -- capture and undo -----------------------------------------------------------


def _lookup(path: str, roots: dict[str, Any]) -> Any:
    root, *keys = path.split(".")
    if root not in roots:
        raise KeyError(path)
    value = roots[root]
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise KeyError(path)
        value = value[key]
    return value


def expand(value: Any, roots: dict[str, Any]) -> Any:
    """Fill ``{arguments.x}`` / ``{prior.x}``: a whole-string placeholder keeps the
    value's type, an embedded one is formatted in. KeyError names a missing one."""
    if isinstance(value, dict):
        return {k: expand(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, roots) for v in value]
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return _lookup(whole.group(1), roots)
        return _PART.sub(lambda m: str(_lookup(m.group(1), roots)), value)
    return value


def encode_target(tool: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"tool": tool, "arguments": arguments}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def decode_target(target: str) -> tuple[str, dict[str, Any]]:
    value = json.loads(target)
    return str(value["tool"]), dict(value.get("arguments") or {})


def is_target(target: str | None) -> bool:
    return bool(target) and str(target).startswith("{")


def capture_target(rule: McpRule | None, arguments: dict[str, Any]) -> str | None:
    """The capture tool call for this call, or None when the rule names none.

    Raises KeyError when the call lacks an argument the template names.
    """
    if rule is None or not isinstance(rule.capture, ToolCapture):
        return None
    return encode_target(rule.capture.tool, expand(rule.capture.arguments,
                                                   {"arguments": arguments}))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v != REDACTED}
    if isinstance(value, list):
        return [_clean(v) for v in value if v != REDACTED]
    return value


def prior_fields(prior: Any, sent: dict[str, Any]) -> dict[str, Any] | None:
    """The prior values of the arguments sent; arguments the prior state lacks
    (identifiers such as ``id``) are sent back as the agent sent them.

    >>> prior_fields({"id": "c1", "plan": "pro", "seats": 3}, {"id": "c1", "plan": "free"})
    {'id': 'c1', 'plan': 'pro'}
    """
    if not isinstance(prior, dict):
        return None
    out = {}
    for key, value in sent.items():
        if key in prior:
            if prior[key] == REDACTED:
                return None  # a secret cannot be restored from its marker
            out[key] = _clean(prior[key])
        else:
            out[key] = value
    return out


def infer_undo(rule: McpRule | None, tool: str, arguments: dict[str, Any], prior: Any,
               captured: bool) -> tuple[dict[str, Any] | None, bool]:
    """The compensating tool call known before forwarding: (undo, reversible).

    A rule's ``undo`` decides (``none``: irreversible); without one, a call
    whose prior state was captured is undone by the same tool with the prior
    values of the arguments it sent (``prior_fields``), like a REST update.
    """
    spec = rule.undo if rule is not None else None
    if spec == "none":
        return None, False
    if isinstance(spec, ToolUndo):
        undo_tool, how = spec.tool, spec.arguments
    elif captured:
        undo_tool, how = tool, "prior_fields"
    else:
        return None, False
    if how == "prior":
        if not captured or not isinstance(prior, dict):
            return None, False
        body: Any = _clean(prior)
    elif how == "prior_fields":
        body = prior_fields(prior, arguments) if captured else None
        if body is None:
            return None, False
    else:
        try:
            body = expand(how, {"arguments": arguments, "prior": prior if captured else None})
        except KeyError:
            return None, False
    return {"method": TOOLS_CALL, "path": undo_tool, "body": body, "content_type": JSON}, True


# -- results ---------------------------------------------------------------------


def sse_messages(body: bytes) -> list[Any]:
    """The JSON data of each event of a whole ``text/event-stream`` body."""
    out: list[Any] = []
    data: list[str] = []
    for line in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n") + [""]:
        if line == "":
            if data:
                try:
                    out.append(json.loads("\n".join(data)))
                except ValueError:
                    pass
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return out


def response_in(body: bytes, content_type: str | None, request_id: Any) -> dict[str, Any] | None:
    """The JSON-RPC response to ``request_id`` in a JSON or SSE body, else None."""
    kind = media_type(content_type)
    if kind == SSE:
        candidates = sse_messages(body)
    else:
        try:
            value = json.loads(body) if body else None
        except ValueError:
            return None
        candidates = value if isinstance(value, list) else [value]
    for item in candidates:
        if isinstance(item, dict) and ("result" in item or "error" in item) and \
                (request_id is ANY_ID or item.get("id") == request_id):
            return item
    return None


def failure(response: dict[str, Any] | None, sent: Any = None) -> str | None:
    """Why a tool call did not do its work (a JSON-RPC error, ``isError``), else None.
    The server's words are quoted redacted (``redact_quoted``): a secret-named field, or
    a secret argument of ``sent`` (the call's arguments) it repeats, is ``[REDACTED]``.
    """
    if response is None:
        return "no JSON-RPC response to the call"
    if "error" in response:
        error = response["error"] if isinstance(response["error"], dict) else {}
        return redact_quoted(f"JSON-RPC error {error.get('code')}: {error.get('message')}",
                             secret_values(sent))
    result = response.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        text = redact_quoted(result_text(result) or "(no text)", secret_values(sent))
        return "the tool reported an error: " + text[:500]
    return None


def redact_answer(answer: dict[str, Any] | None, sent: Any = None) -> dict[str, Any] | None:
    """A JSON-RPC response as journaled: its text contents and error message redacted as
    a prior's state is (``redact_text``), with the secret arguments of ``sent`` it
    repeats (``redact_quoted``); the rest is redacted by name with the whole body."""
    if not isinstance(answer, dict):
        return answer
    secrets = secret_values(sent)
    error = answer.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return {**answer, "error": {**error, "message": redact_quoted(error["message"],
                                                                      secrets)}}
    result = answer.get("result")
    if not isinstance(result, dict):
        return answer
    if isinstance(result.get("content"), list):
        result = {**result, "content": [
            {**c, "text": redact_quoted(c["text"], secrets)}
            if isinstance(c, dict) and isinstance(c.get("text"), str) else c
            for c in result["content"]]}
    if secrets and "structuredContent" in result:  # a tool's free text, outside content
        result = {**result, "structuredContent": _without(result["structuredContent"],
                                                          secrets)}
    return {**answer, "result": result} if result is not answer.get("result") else answer


def _without(value: Any, secrets: frozenset[str]) -> Any:
    """``value`` with each of ``secrets`` replaced in every string it holds."""
    if isinstance(value, str):
        return redact_quoted(value, secrets) if any(s in value for s in secrets) else value
    if isinstance(value, dict):
        return {k: _without(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, secrets) for v in value]
    return value


def result_text(result: dict[str, Any]) -> str | None:
    texts = [str(c["text"]) for c in result.get("content") or []
             if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)]
    return "\n".join(texts) if texts else None


def tool_state(result: Any) -> Any:
    """The state a read tool returned: its structured content, else its text parsed
    as JSON, else its text (redacted, as every journaled value)."""
    state = true_tool_state(result)
    return redact_json(state) if isinstance(state, (dict, list)) else state


def true_tool_state(result: Any) -> Any:
    """``tool_state`` before redaction: what rollback needs to put secrets back (the
    journal keeps it sealed, ``gateway.services.sealing``)."""
    if not isinstance(result, dict):
        return None
    if result.get("structuredContent") is not None:
        return result["structuredContent"]
    text = result_text(result)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
