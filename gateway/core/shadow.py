"""What a shadowed write answers: the gateway's best projection of the upstream's answer.

In ``mode: shadow`` a write is journaled with its prior state and never sent
(``gateway.core.autonomy``). The agent still gets a 2xx, built here from the
prior state and the request alone:

- PATCH: the prior merged with a JSON object body (RFC 7396 merge patch: a
  ``null`` removes the field; a form body sets its fields), 200. A body that is
  not an object (a JSON Patch array, bytes) leaves the prior as it was.
- PUT: the body replaces the resource, 200 (201 when there was none).
- POST with a ``capture`` path (APIs that update with POST): the prior with the
  sent fields over it, 200. Any other POST creates: the body echoed with an
  ``id`` (its own, else ``shadow-<journal entry id>``), 201 and a ``Location``.
- DELETE: 200 with the prior state as the body when one was captured, else 204
  with no body.
- anything else (no JSON to work from): 202 with no body.

A shadowed MCP ``tools/call`` answers a tool result whose structured content
(and text) is the prior with the arguments over it, or the arguments with an
``id`` when nothing was captured.

>>> merge_patch({"plan": "pro", "tags": ["a"], "name": "Ada"}, {"plan": "free", "tags": None})
{'plan': 'free', 'name': 'Ada'}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Projection:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    value: Any = None  # the projected resource, when there is one

    @classmethod
    def of(cls, status: int, value: Any, *headers: tuple[str, str]) -> Projection:
        if value is None:
            return cls(status, tuple(headers), b"", None)
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, (("content-type", JSON), *headers), body, value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: an object patch merges key by key (``null`` deletes); anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def shadow_id(entry_id: str) -> str:
    return f"shadow-{entry_id}"


def project(method: str, prior: Any, prior_status: int | None, body: Any, form: bool,
            collection: str, entry_id: str, captured_path: bool) -> Projection:
    """The answer to a shadowed REST write.

    ``body`` is the parsed request body (JSON, or a flat dict for a form:
    ``form``); ``collection`` the agent-facing path a created resource's id is
    appended to for ``Location``; ``captured_path``: the rule names a capture
    path (a POST that updates).
    """
    existed = prior_status is not None and 200 <= prior_status < 300
    current = prior if existed and isinstance(prior, dict) else None
    if method == "PATCH":
        if isinstance(body, dict):
            merged = {**(current or {}), **body} if form else merge_patch(current or {}, body)
            return Projection.of(200, merged)
        return Projection.of(200, current) if current is not None else Projection.of(202, None)
    if method == "PUT":
        if isinstance(body, (dict, list)):
            return Projection.of(200 if existed else 201, body)
        return Projection.of(200 if existed else 201, None)
    if method == "POST":
        if captured_path and current is not None:
            return Projection.of(200, {**current, **body} if isinstance(body, dict) else current)
        if isinstance(body, dict):
            made = body.get("id")
            new_id = made if isinstance(made, (str, int)) and made != "" else shadow_id(entry_id)
            location = f"{collection.rstrip('/')}/{new_id}"
            return Projection.of(201, {**body, "id": new_id}, ("location", location))
        return Projection.of(202, None)
    if method == "DELETE":
        if existed and prior is not None:
            return Projection.of(200, prior)
        return Projection.of(204, None)
    return Projection.of(202, None)


def project_tool(request_id: Any, prior: Any, prior_status: int | None,
                 arguments: dict[str, Any], entry_id: str) -> Projection:
    """The JSON-RPC answer to a shadowed ``tools/call`` (HTTP 200): a tool result whose
    structured content is the projected state; a notification gets 202 and no body."""
    if request_id is None:
        return Projection.of(202, None)
    existed = prior_status is not None and 200 <= prior_status < 300
    if existed and isinstance(prior, dict):
        value: dict[str, Any] = {**prior, **arguments}
    else:
        made = arguments.get("id")
        value = {**arguments, "id": made if isinstance(made, (str, int)) and made != ""
                 else shadow_id(entry_id)}
    text = json.dumps(value, ensure_ascii=False)
    result = {"content": [{"type": "text", "text": text}], "structuredContent": value,
              "isError": False}
    return Projection.of(200, {"jsonrpc": "2.0", "id": request_id, "result": result})
