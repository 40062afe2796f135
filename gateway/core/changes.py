"""What one journaled write changed, field by field: the operators' before -> after.

The "before" is the captured prior state; the "after" is what the write left,
as the upstream answered it (its JSON response), else the read the gateway
made after it, else, for a PATCH, the prior state with the sent fields laid
over it. Values are the journal's, so secrets are already redacted.

>>> entry_changes("PATCH", {"plan": "pro", "name": "Ada"}, '{"plan": "free", "name": "Ada"}',
...               None, None)
[{'field': 'plan', 'before': 'pro', 'after': 'free'}]
"""

from __future__ import annotations

import json
from typing import Any

TOOLS_CALL = "tools/call"  # gateway.core.policy.mcp_schema's; not imported: this module stands alone


def _object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def entry_changes(method: str, prior: Any, response_body: str | None, after: Any,
                  request_body: str | None) -> list[dict[str, Any]]:
    """``[{"field", "before", "after"}]`` for every top-level field that differs."""
    before = prior if isinstance(prior, dict) else {}
    if method == "DELETE":
        return [{"field": k, "before": v, "after": None} for k, v in sorted(before.items())]
    if method == TOOLS_CALL:  # the response is a JSON-RPC envelope, not the resource
        left = after if isinstance(after, dict) else None
    else:
        left = _object(response_body) or (after if isinstance(after, dict) else None)
    if left is None:
        sent = _object(request_body)
        if method == TOOLS_CALL and sent is not None:  # the message: its arguments
            params = sent.get("params")
            arguments = params.get("arguments") if isinstance(params, dict) else None
            sent = arguments if isinstance(arguments, dict) else None
            if sent is not None:
                sent = {**before, **sent}
        if sent is None:
            return []
        left = {**before, **sent} if method == "PATCH" else sent
    keys = sorted(set(before) | set(left))
    return [{"field": k, "before": before.get(k), "after": left.get(k)}
            for k in keys if before.get(k) != left.get(k)]
