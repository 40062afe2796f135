"""What the journal seals: the true values behind its redacted ones.

Views and the store's readable columns show secret-named fields redacted;
an undo built from that would erase them upstream. So when redaction changed
a prior state, the *true* undo (``gateway.core.undo``, inferred with the shown
one) is sealed with the entry (``JournalEntry.sealed``), and likewise the true state a write left
(``sealed_outcome``), which rollback's drift check compares with the true
current state. A text or binary prior (an S3 object, a file) is sealed whole,
up to ``journal_body_limit``, and put back byte for byte; a larger one is
irreversible with the reason journaled. Rollback opens these values when it
plans (``open_entry``) and seals a step's own true body the same way
(``seal_step`` / ``open_step``): a key that is missing or wrong refuses the
step with the reason, it never sends the redacted state instead.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from typing import Any

from gateway.core import journal as journaling
from gateway.core.model import JournalEntry, Undo
from gateway.core.redact import hides, redact_json
from gateway.core.rollback import Step
from gateway.core.seal import Sealer, plain
from gateway.core.undo import HEADERS, RAW, Inferred
from gateway.ports import Observed

JOURNAL = "journal"  # the purposes sealed values are bound to (associated data)
OUTCOME = "journal-outcome"
STEP = "rollback-step"


@dataclass(frozen=True, slots=True)
class Kept:
    """An intent's undo as journaled, and what is sealed beside it."""

    undo: dict[str, Any] | None
    reversible: bool
    sealed: str | None = None
    irreversible_reason: str | None = None


def for_intent(sealer: Sealer, inferred: Inferred) -> Kept:
    """An intent's undo as journaled, the true one sealed beside it when it differs.

    One that carries nothing secret (the bytes of a JSON prior without secret-named
    fields, which the ``prior`` column shows anyway) is kept as plain JSON, key or no
    key: encrypting what is readable beside it hid nothing, and was an AES-GCM seal
    and a random nonce on nearly every PATCH."""
    if inferred.true is None:
        return Kept(inferred.shown, inferred.reversible, None, inferred.irreversible_reason)
    true = {"undo": inferred.true}
    kept = sealer.seal(true, JOURNAL) if inferred.secret else plain(true)
    return Kept(inferred.shown, inferred.reversible, kept, inferred.irreversible_reason)


def for_outcome(sealer: Sealer, parsed: Any, after: Any, true_after: Any) -> str | None:
    """The true state a write left (its parsed response, or the read after it) when
    redaction changed what the journal shows of it; None when the journaled one is true."""
    sealed: dict[str, Any] = {}
    if isinstance(parsed, (dict, list)) and hides(parsed):
        sealed["response"] = parsed
    if true_after is not None and true_after != after:
        sealed["after"] = true_after
    return sealer.seal(sealed, OUTCOME) if sealed else None


def true_state(seen: Observed) -> Any:
    """A read's true value: JSON, else the digest of its text or bytes, else as journaled."""
    if seen.body and 200 <= seen.status < 300:
        value = seen.true if seen.true is not None else journaling.true_value(seen.body,
                                                                               seen.status)
        if value is not None:
            return value
        if not isinstance(seen.value, (dict, list)):
            return journaling.digest(seen.body, seen.content_type)
    return seen.value


def open_entry(sealer: Sealer, entry: JournalEntry) -> tuple[JournalEntry, Any]:
    """``entry`` with its true undo and state read after, and its true response (parsed;
    None when not sealed), kept apart: plans list an entry's journaled response as is.
    ``SealError`` when they cannot be opened."""
    changes: dict[str, Any] = {}
    response = None
    if entry.sealed is not None:
        opened = sealer.open(entry.sealed, JOURNAL)
        if opened.get("undo") is not None:
            changes["undo"] = Undo.from_json(opened["undo"])
    if entry.sealed_outcome is not None:
        opened = sealer.open(entry.sealed_outcome, OUTCOME)
        response = opened.get("response")
        if "after" in opened:
            changes["after"] = opened["after"]
    return (replace(entry, **changes) if changes else entry), response


def seal_step(sealer: Sealer, step: Step) -> Step:
    """A planned step as stored and shown: body and expected state redacted, the true
    ones sealed beside them when they differ."""
    body = None if _is_raw(step.body) else redact_json(step.body)
    expected = redact_json(step.expected)
    if body == step.body and expected == step.expected:
        return step
    # Bytes read as JSON without secret-named fields (``_as_read``) are kept even
    # without a key; anything redacted, or opaque bytes, only sealed.
    secret = expected != step.expected or (body != step.body and not _plain_json(step.body))
    keep = sealer.seal if secret else sealer.keep
    sealed = keep({"body": step.body, "expected": step.expected}, STEP)
    return replace(step, body=body, expected=expected, sealed=sealed)


def open_step(sealer: Sealer, step: Step) -> Step:
    if step.sealed is None:
        return step
    opened = sealer.open(step.sealed, STEP)
    return replace(step, body=opened["body"], expected=opened["expected"])


def body_headers(body: Any) -> list[tuple[str, str]]:
    """The headers a raw true body is sent with (an S3 object's metadata)."""
    return list(body.get(HEADERS, {}).items()) if _is_raw(body) else []


def body_bytes(body: Any) -> bytes | None:
    """A true step body that is bytes (a text or binary prior), else None."""
    return base64.b64decode(body[RAW]) if _is_raw(body) else None


def _plain_json(body: Any) -> bool:
    """A raw body that is JSON with nothing to redact."""
    raw = body_bytes(body)
    value = journaling.true_value(raw, 200) if raw is not None else None
    return isinstance(value, (dict, list)) and redact_json(value) == value


def _is_raw(body: Any) -> bool:
    return isinstance(body, dict) and RAW in body and set(body) <= {RAW, HEADERS}


__all__ = ["Kept", "for_intent", "for_outcome", "open_entry", "open_step",
           "seal_step", "true_state"]
