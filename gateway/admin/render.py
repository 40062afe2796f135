"""JSON views of core values for operators."""

from __future__ import annotations

from typing import Any

from gateway.core.changes import entry_changes
from gateway.core.model import JournalEntry, iso


def journal_item(entry: JournalEntry) -> dict[str, Any]:
    """The contract's journal fields, then the detail operators need to judge a call."""
    item: dict[str, Any] = {
        "id": entry.id, "at": iso(entry.at), "agent": entry.agent, "run": entry.checkpoint.run,
        "upstream": entry.upstream, "method": entry.method, "path": entry.path,
        "rule": entry.rule, "decision": entry.decision, "status": entry.status,
        "mode": entry.mode, "would_decide": entry.would_decide,
        "prior": entry.prior, "undo": entry.undo.to_json() if entry.undo else None,
        "reversible": entry.reversible, "irreversible_reason": entry.irreversible_reason,
        "state": entry.state.value, "query": entry.query, "request_id": entry.request_id,
        "model": entry.checkpoint.model, "prompt_version": entry.checkpoint.prompt_version,
        "tool_version": entry.checkpoint.tool_version,
        "policy_revision": entry.policy_revision, "prior_status": entry.prior_status,
        "capture_path": entry.capture_path, "error": entry.error, "timings": entry.timings,
        "request": {"headers": entry.request_headers, "body": entry.request_body,
                    "body_sha256": entry.request_body_sha256,
                    "body_size": entry.request_body_size,
                    "content_type": entry.request_content_type},
        "response": {"status": entry.status, "headers": entry.response_headers,
                     "body": entry.response_body, "body_sha256": entry.response_body_sha256,
                     "body_size": entry.response_body_size},
        "completed_at": iso(entry.completed_at) if entry.completed_at else None,
        "approval": entry.approval, "after": entry.after,
        "rolled_back_plan": entry.rolled_back_plan,
        "rolled_back_at": iso(entry.rolled_back_at) if entry.rolled_back_at else None,
        "changes": entry_changes(entry.method, entry.prior, entry.response_body, entry.after,
                                 entry.request_body),
    }
    return item
