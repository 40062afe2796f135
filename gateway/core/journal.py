"""Journal entries and their inverses.

Each mutating call is journaled twice: its intent (with the prior state) is
committed before the call is forwarded, its outcome once the upstream answers.
The inverse call, the ``undo``, is inferred here (contract):

- PUT/PATCH -> PUT the prior state to the same path;
- DELETE -> POST the prior state to the parent collection;
- POST to a collection -> DELETE the created resource (``Location`` or ``id``);
- POST with a ``capture`` path (APIs that update with POST) -> POST the prior
  values of the fields sent back to that path;
- a rule's ``undo`` overrides all of this; ``undo: none`` marks the call irreversible;
- what cannot be inferred is irreversible, never a guess: a POST that answers
  with its own path's id updated an item (it created nothing to DELETE), and a
  body in neither JSON nor form encoding (multipart, binary) gets no undo
  built from the fields it sent;
- an MCP ``tools/call`` is captured and undone through tools (``gateway.core.mcp``).

Bodies are bounded: up to ``limit`` bytes are kept as text, the sha256 and
size always cover the whole body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.core import mcp
from gateway.core.body import FORM, JSON, form_key_path, is_json_type, media_type, parse_body
from gateway.core.jsontext import compact, loads
from gateway.core.policy.mcp_schema import TOOLS_CALL, McpRule
from gateway.core.policy.schema import Rule
from gateway.core.redact import REDACTED, redact_form, redact_json, redact_text
from gateway.core.template import Template


@dataclass(frozen=True, slots=True)
class StoredBody:
    text: str | None
    sha256: str | None
    size: int


_UNPARSED: Any = object()


def store_body(body: bytes, content_type: str | None, limit: int,
               parsed: Any = _UNPARSED) -> StoredBody:
    """Redact (JSON and form fields by name, other text's ``name=value`` pairs by name),
    then keep at most ``limit`` bytes of text; hash and size the original.

    ``parsed`` is ``parse_body(body, content_type)`` when the caller has it already.
    """
    if not body:
        return StoredBody(None, None, 0)
    digest = hashlib.sha256(body).hexdigest()
    text: str | None
    if is_json_type(content_type) or media_type(content_type) in ("", "text/plain"):
        if parsed is _UNPARSED:  # the whole body: a secret past ``limit`` is still a secret
            parsed = parse_body(body, JSON)
        if parsed is not None:
            text = compact(redact_json(parsed))
        else:
            text = redact_text(body[:limit].decode("utf-8", "replace"))
    elif media_type(content_type) == FORM:
        text = redact_form(body.decode("utf-8", "replace"))
    elif media_type(content_type).startswith("text/"):
        text = redact_text(body[:limit].decode("utf-8", "replace"))
    else:
        text = None  # binary: hash and size only
    if text is not None and len(text.encode()) > limit:
        text = text.encode()[:limit].decode("utf-8", "ignore")
    return StoredBody(text, digest, len(body))


def prior_value(body: bytes, status: int, content_type: str | None = None) -> Any:
    """The captured state as shown: redacted JSON, else text, None when absent; a binary
    state (a content type neither JSON nor text) is summarised (``binary_summary``)."""
    return read_state(body, status, content_type)[0]


def read_state(body: bytes, status: int, content_type: str | None = None) -> tuple[Any, Any]:
    """``prior_value`` and ``true_value`` of one read, its body parsed once."""
    if status in (404, 410) or not body:
        return None, None
    try:
        true = loads(body)
    except (ValueError, UnicodeDecodeError):
        pass
    else:
        return redact_json(true), true
    kind = media_type(content_type)
    if kind and not kind.startswith("text/") and kind not in (FORM, "application/xml"):
        return binary_summary(body, content_type), None
    return body.decode("utf-8", "replace"), None


def true_value(body: bytes, status: int) -> Any:
    """The captured state unredacted (what is sealed), JSON or None; see ``prior_value``."""
    if status in (404, 410) or not body:
        return None
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def binary_summary(body: bytes, content_type: str | None) -> str:
    return (f"[{len(body)} bytes of {media_type(content_type) or 'unknown type'}, "
            f"sha256 {hashlib.sha256(body).hexdigest()}]")


def digest(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A text or binary state as compared for drift: its hash, size and type, not its bytes."""
    return {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
            "content_type": media_type(content_type) or None}


# headers that are part of a stored object (S3), put back with its bytes
OBJECT_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language",
                  "expires")


def object_header(name: str) -> bool:
    name = name.lower()
    return name.startswith("x-amz-meta-") or name in OBJECT_HEADERS


def raw_undo(rule: Rule | McpRule | None, method: str, path: str, params: dict[str, str],
             content_type: str | None) -> dict[str, Any] | None:
    """The inverse of a write over a text or binary resource (an S3 object, a file): the
    prior bytes PUT back byte for byte in their own content type, to the rule's ``undo``
    path when it names one. None when the rule says ``undo: none`` or the call creates."""
    if isinstance(rule, McpRule) or method not in ("PUT", "PATCH", "DELETE", "POST"):
        return None
    spec = rule.undo if rule is not None else None
    if spec == "none":
        return None
    kind = content_type or "application/octet-stream"
    if spec is not None and not isinstance(spec, str):
        if spec.body not in ("prior", "prior_fields"):
            return None
        return {"method": spec.method, "path": Template.parse(spec.path).expand(params),
                "body": None, "content_type": kind}
    if method == "POST":
        return None
    return {"method": "PUT", "path": path, "body": None, "content_type": kind}


def capture_path(rule: Rule | McpRule | None, method: str, path: str, params: dict[str, str],
                 arguments: Any = None) -> str | None:
    """The path to GET for the prior state (for a tool call: the capture tool call,
    ``gateway.core.mcp``), or None when nothing is captured."""
    if method == TOOLS_CALL or isinstance(rule, McpRule):
        return mcp.capture_target(rule if isinstance(rule, McpRule) else None,
                                  arguments if isinstance(arguments, dict) else {})
    spec = rule.capture if rule is not None else None
    if spec is False:
        return None
    if spec is not None:
        return Template.parse(spec.path).expand(params)
    return path if method in ("PUT", "PATCH", "DELETE") else None


def _without_redacted(value: Any) -> Any:
    """Drop redacted fields at any depth: an undo must not write the marker back."""
    if isinstance(value, dict):
        return {k: _without_redacted(v) for k, v in value.items() if v != REDACTED}
    if isinstance(value, list):
        return [_without_redacted(v) for v in value if v != REDACTED]
    return value


_MISSING: Any = object()
FORM_UNSET = ""  # how form APIs (Stripe) unset a field: send it empty


def _lookup(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _prior_fields(prior: Any, sent: Any, form: bool = False) -> Any:
    """The prior values of the fields the call sent. A form key in bracket notation
    (``metadata[tier]``) is looked up nested in the prior state; one that did not
    exist there is unset the form way (empty; JSON: null), so the undo removes what
    the call added."""
    if not isinstance(prior, dict) or not isinstance(sent, dict):
        return None
    if not form:  # JSON: a field the prior state lacked is unset with null
        return {k: _without_redacted(prior[k]) if k in prior else None for k in sent
                if prior.get(k) != REDACTED}
    out: dict[str, Any] = {}
    for key in sent:
        value = _lookup(prior, form_key_path(key))
        if value is _MISSING:
            out[key] = FORM_UNSET
        elif value != REDACTED:
            out[key] = _without_redacted(value)
    return out


def _resolve_body(spec: Any, prior: Any, sent: Any, form: bool = False) -> Any:
    if spec == "prior":
        return _without_redacted(prior)
    if spec == "prior_fields":
        return _prior_fields(prior, sent, form)
    return spec


def _omitted(body: Any, fields: tuple[str, ...]) -> Any:
    """``body`` without the dotted ``fields`` (an undo's ``omit``: read-only fields)."""
    if not fields or not isinstance(body, dict):
        return body
    out = dict(body)
    for dotted in fields:
        head, _, rest = dotted.partition(".")
        if head in out and not rest:
            del out[head]
        elif head in out and isinstance(out[head], dict):
            out[head] = _omitted(out[head], (rest,))
    return out


def _undo_kind(content_type: str | None) -> str | None:
    """The encoding an undo body is sent in: the call's own, when it is JSON or a form;
    None for any other body (multipart, binary), which no field-built undo can match."""
    kind = media_type(content_type)
    if kind == FORM:
        return FORM
    if not kind or is_json_type(content_type):
        return JSON
    return None


def infer_undo(rule: Rule | McpRule | None, method: str, path: str, params: dict[str, str],
               prior: Any, prior_status: int | None, sent: Any,
               content_type: str | None) -> tuple[dict[str, Any] | None, bool]:
    """The inverse known before forwarding: (undo, reversible).

    A POST that creates is finished by ``undo_for_created`` once the
    response names the new resource.
    """
    if method == TOOLS_CALL or isinstance(rule, McpRule):
        captured = prior_status is not None and 200 <= prior_status < 300
        return mcp.infer_undo(rule if isinstance(rule, McpRule) else None, path,
                              sent if isinstance(sent, dict) else {}, prior, captured)
    sent_kind = _undo_kind(content_type)
    kind = sent_kind or JSON
    spec = rule.undo if rule is not None else None
    if spec == "none":
        return None, False
    if spec is not None and not isinstance(spec, str):
        if spec.body == "prior" and spec.method == "PUT" and prior_status in (404, 410):
            # nothing was there (an S3 object a multipart upload completes): delete it
            return {"method": "DELETE", "path": Template.parse(spec.path).expand(params),
                    "body": None, "content_type": kind}, True
        if spec.body in ("prior", "prior_fields") and not isinstance(prior, (dict, list)):
            # a text or binary prior cannot be sent back faithfully as JSON: say so
            # rather than restore something else (the journal keeps the text)
            return None, False
        if spec.body == "prior_fields" and sent_kind is None:
            return None, False  # the fields of a multipart or binary body are unknown
        body = _omitted(_resolve_body(spec.body, prior, sent, kind == FORM), spec.omit)
        undo = {"method": spec.method, "path": Template.parse(spec.path).expand(params),
                "body": body, "content_type": kind}
        return undo, not (spec.body in ("prior", "prior_fields") and body is None)
    captured = prior_status is not None and 200 <= prior_status < 300 and isinstance(prior, dict)
    absent = prior_status in (404, 410)
    if method in ("PUT", "PATCH"):
        if absent:
            return {"method": "DELETE", "path": path, "body": None, "content_type": kind}, True
        if captured and sent_kind is not None:  # a JSON prior cannot undo a multipart body
            return {"method": "PUT", "path": path, "body": _without_redacted(prior),
                    "content_type": kind}, True
        return None, False
    if method == "DELETE":
        if captured:
            parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
            return {"method": "POST", "path": parent, "body": _without_redacted(prior),
                    "content_type": kind}, True
        return None, False
    if method == "POST":
        target = capture_path(rule, method, path, params)
        if target is not None and captured:
            body = _prior_fields(prior, sent, kind == FORM)
            if sent_kind is None or not body:
                return None, False  # no field the call sent can be put back
            return {"method": "POST", "path": target, "body": body, "content_type": kind}, True
        return None, False  # completed from the response by undo_for_created
    return None, False


def undo_for_created(path: str, base_path: str, status: int, headers: dict[str, str],
                     body: Any) -> dict[str, Any] | None:
    """DELETE of the resource a POST created, from ``Location`` or the body's ``id``."""
    if not 200 <= status < 300:
        return None
    last = path.rstrip("/").rsplit("/", 1)[-1]
    location = headers.get("location")
    if location:
        target = urlsplit(location).path
        if base_path and target.startswith(base_path + "/"):
            target = target[len(base_path):]
        if not target.startswith("/"):
            target = path.rstrip("/") + "/" + target
        if target.rstrip("/") == path.rstrip("/"):
            return None  # the POST changed the resource it names: nothing was created
        return {"method": "DELETE", "path": target, "body": None, "content_type": JSON}
    if isinstance(body, dict) and isinstance(body.get("id"), (str, int)):
        if str(body["id"]) == last:  # Stripe's POST /v1/customers/{id} updates cus_X
            return None
        return {"method": "DELETE", "path": f"{path.rstrip('/')}/{body['id']}", "body": None,
                "content_type": JSON}
    return None
