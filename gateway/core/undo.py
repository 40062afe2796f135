"""A write's undo, inferred once: as shown, and as it must be sent (pure).

Views and the journal's readable columns show a prior state redacted; an undo
built from that would erase the redacted fields upstream. So one inference
(``infer``) yields both forms of the undo: the one journaled and shown (built
from the redacted prior) and, when it differs, the true one (built from the
prior as read), which ``gateway.services.sealing`` seals beside the entry. A
text or binary prior (an S3 object, a file) is put back byte for byte, up to
the journal's body limit; a larger one is irreversible, with the reason.

The rules that build an undo from a prior are ``gateway.core.journal``'s
(``infer_undo``, ``raw_undo``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core import journal as journaling
from gateway.core.body import media_type
from gateway.core.policy.mcp_schema import McpRule
from gateway.core.policy.schema import Rule

RAW = "__base64__"  # a true body that is bytes, not JSON (only ever inside sealed values)
HEADERS = "__headers__"  # beside RAW: the object's own headers (S3 x-amz-meta-*) sent with it


class Read(Protocol):
    """The capture a write's undo is built from (``gateway.ports.Observed``)."""

    @property
    def status(self) -> int: ...
    @property
    def value(self) -> Any: ...  # redacted, as journaled and shown
    @property
    def body(self) -> bytes: ...  # the bytes read
    @property
    def content_type(self) -> str | None: ...
    @property
    def meta(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def true(self) -> Any: ...  # ``body`` as JSON, when already parsed (None: not parsed)


@dataclass(frozen=True, slots=True)
class Inferred:
    """A write's undo in both forms. ``shown`` is journaled; ``true`` is what rollback
    sends instead, when it differs (None: ``shown`` is true). ``secret``: ``true``
    carries what was redacted or opaque bytes, so it is kept only sealed; otherwise it
    may be kept as plain JSON without a key. ``reversible`` is the true undo's."""

    shown: dict[str, Any] | None
    reversible: bool
    true: dict[str, Any] | None = None
    secret: bool = True
    irreversible_reason: str | None = None


def infer(rule: Rule | McpRule | None, method: str, path: str, params: dict[str, str],
          seen: Read | None, sent: Any, content_type: str | None, limit: int) -> Inferred:
    """The undo of a write to ``path`` whose prior state was ``seen`` (None: nothing
    was captured). ``limit``: the most bytes of a prior kept to be put back."""
    prior, prior_status = (seen.value, seen.status) if seen is not None else (None, None)
    undo, reversible = journaling.infer_undo(rule, method, path, params, prior, prior_status,
                                             sent, content_type)
    if seen is None or not seen.body or not 200 <= seen.status < 300:
        return Inferred(undo, reversible)
    true_prior = seen.true if seen.true is not None else journaling.true_value(seen.body,
                                                                             seen.status)
    if isinstance(rule, McpRule):  # a capture tool's state: JSON, never bytes to put back
        if true_prior is None or true_prior == seen.value:
            return Inferred(undo, reversible)
        true_undo, true_reversible = journaling.infer_undo(
            rule, method, path, params, true_prior, seen.status, sent, content_type)
        if true_undo == undo:
            return Inferred(undo, reversible)
        return Inferred(undo, true_reversible, true_undo)
    if true_prior is not None:
        if true_prior == seen.value:  # nothing was redacted: the journaled undo is true
            true_undo, true_reversible = undo, reversible
        else:
            true_undo, true_reversible = journaling.infer_undo(
                rule, method, path, params, true_prior, seen.status, sent, content_type)
        exact = _as_read(true_undo, true_prior, seen, limit)
        if exact is not None:  # kept (plain JSON without a key) unless secrets were redacted
            return Inferred(undo, true_reversible, exact, secret=true_prior != seen.value)
        if true_undo == undo:
            return Inferred(undo, reversible)
        return Inferred(undo, true_reversible, true_undo)
    if undo is not None:  # the rule's own undo for a text prior
        return Inferred(undo, reversible)
    raw = journaling.raw_undo(rule, method, path, params, seen.content_type)
    if raw is None:
        return Inferred(undo, reversible)
    if len(seen.body) > limit:
        return Inferred(None, False, None, True, (
            f"the prior state is {len(seen.body)} bytes of "
            f"{media_type(seen.content_type) or 'unknown type'}, over "
            f"journal_body_limit ({limit}): it was not kept, so it cannot be restored"))
    return Inferred(raw, True, {**raw, "body": raw_body(seen)})


def _as_read(undo: dict[str, Any] | None, prior: Any, seen: Read,
             limit: int) -> dict[str, Any] | None:
    """An undo that puts the whole prior back sends the bytes that were read, not a
    re-encoding of them: a JSON document stored as an object (S3, a file store) comes
    back byte for byte, spacing and trailing newline included. None otherwise."""
    if undo is None or undo.get("body") != prior or not isinstance(prior, (dict, list)) \
            or len(seen.body) > limit:
        return None
    return {**undo, "body": raw_body(seen),
            "content_type": seen.content_type or undo.get("content_type")}


def raw_body(seen: Read) -> dict[str, Any]:
    """The bytes read, as a true body carries them (base64, and the object's headers)."""
    raw: dict[str, Any] = {RAW: base64.b64encode(seen.body).decode()}
    if seen.meta:
        raw[HEADERS] = dict(seen.meta)
    return raw
