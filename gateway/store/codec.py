"""How core values become rows and back, plus the hot-path SQL built from them.

The column lists are written once here; the raw-driver statements and the
ORM rows both follow them, so the two ways into the journal cannot drift.
JSON goes in as compact text; ``prior``, ``undo``, ``approval`` and ``after``
are NULL when absent (so, as for ``prior``, a JSON null reads back as None).
A held call's votes are written by ``votes_text`` alone, with sorted keys, so
the same votes are always the same text: the approval compare-and-set
statements match on that text. A rollback step's ``expected`` is NULL when
unknown; the ``ABSENT`` marker is stored as the JSON object it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from gateway.core import seal
from gateway.core.approvals import ApprovalStatus, HeldCall, Vote, redacted_response
from gateway.core.model import (
    AuditRecord,
    Checkpoint,
    Freeze,
    FreezeScope,
    JournalEntry,
    JournalOutcome,
    JournalState,
    Undo,
    iso,
    parse_iso,
)
from gateway.core.redact import carries_secrets, redact_headers, redact_query, redacted_body
from gateway.core.rollback import Plan, PlanStatus, Step, StepStatus
from gateway.core.seal import NO_SEALER, Sealer
from gateway.errors import SealError
from gateway.store.tables import (
    ApprovalRow,
    AuditRow,
    JournalRow,
    LeftWriteRow,
    RollbackPlanRow,
    RollbackStepRow,
)

JOURNAL_COLUMNS = (
    "id", "at", "request_id", "agent", "run", "model", "prompt_version", "tool_version",
    "upstream", "method", "path", "query", "rule", "decision", "policy_revision",
    "request_headers", "request_body", "request_body_sha256", "request_body_size",
    "request_content_type", "prior", "prior_status", "capture_path", "undo", "reversible",
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "error", "timings", "completed_at", "approval", "after",
    "mode", "would_decide", "sealed", "irreversible_reason",
)
OUTCOME_COLUMNS = (
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "undo", "reversible", "error", "timings", "completed_at", "after",
    "sealed_outcome",
)


def quoted(columns: Sequence[str]) -> str:
    """``"a", "b"``: column names for SQL, quoted ("by" is a keyword)."""
    return ", ".join(f'"{c}"' for c in columns)


UPDATE_OUTCOME = (
    "UPDATE journal SET " + ", ".join(f'"{c}" = ?' for c in OUTCOME_COLUMNS) + " WHERE id = ?"
)


def dumps(value: Any) -> str:
    """Compact JSON text; orjson, which measured 15-25x faster here for a write's values.

    The standard library takes over where the two would differ: integers
    beyond 64 bits (orjson refuses them) and NaN or infinities (orjson writes
    null; they must read back as they were), which can only hide behind a null.
    """
    try:
        data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return _stdlib_dumps(value)
    if b"null" in data:
        return _stdlib_dumps(value)
    return data.decode()


def _stdlib_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dumps_or_null(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _iso_or_null(at: datetime | None) -> str | None:
    return None if at is None else iso(at)


def _parse_or_none(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def _undo_text(undo: Undo | None) -> str | None:
    return None if undo is None else dumps(undo.to_json())


def journal_params(entry: JournalEntry) -> tuple[Any, ...]:
    """The INSERT parameters for ``entry``, in ``JOURNAL_COLUMNS`` order."""
    cp = entry.checkpoint
    return (
        entry.id, iso(entry.at), entry.request_id, entry.agent,
        cp.run, cp.model, cp.prompt_version, cp.tool_version,
        entry.upstream, entry.method, entry.path, entry.query, entry.rule, entry.decision,
        entry.policy_revision, dumps(entry.request_headers), entry.request_body,
        entry.request_body_sha256, entry.request_body_size, entry.request_content_type,
        dumps_or_null(entry.prior), entry.prior_status, entry.capture_path,
        _undo_text(entry.undo), entry.reversible, entry.state.value, entry.status,
        dumps(entry.response_headers), entry.response_body, entry.response_body_sha256,
        entry.response_body_size, entry.error, dumps(entry.timings),
        None if entry.completed_at is None else iso(entry.completed_at),
        dumps_or_null(entry.approval), dumps_or_null(entry.after),
        entry.mode, entry.would_decide, entry.sealed, entry.irreversible_reason,
    )


def intent_params(entry: JournalEntry, process: str | None) -> tuple[Any, ...]:
    """``journal_params`` and the process that journals it (``killswitch.INTENT_COLUMNS``)."""
    return (*journal_params(entry), process, entry.resend_key)


def outcome_params(entry_id: str, outcome: JournalOutcome) -> tuple[Any, ...]:
    """The UPDATE parameters, in ``OUTCOME_COLUMNS`` order, then the id."""
    return (
        outcome.state.value, outcome.status, dumps(outcome.response_headers),
        outcome.response_body, outcome.response_body_sha256, outcome.response_body_size,
        _undo_text(outcome.undo), outcome.reversible, outcome.error, dumps(outcome.timings),
        iso(outcome.completed_at), dumps_or_null(outcome.after), outcome.sealed, entry_id,
    )


def entry_from_row(row: JournalRow) -> JournalEntry:
    undo = _loads_or_none(row.undo)
    return JournalEntry(
        id=row.id,
        at=parse_iso(row.at),
        request_id=row.request_id,
        agent=row.agent,
        checkpoint=Checkpoint(row.run, row.model, row.prompt_version, row.tool_version),
        upstream=row.upstream,
        method=row.method,
        path=row.path,
        query=row.query,
        rule=row.rule,
        decision=row.decision,
        policy_revision=row.policy_revision,
        request_headers=json.loads(row.request_headers),
        request_body=row.request_body,
        request_body_sha256=row.request_body_sha256,
        request_body_size=row.request_body_size,
        request_content_type=row.request_content_type,
        prior=_loads_or_none(row.prior),
        prior_status=row.prior_status,
        capture_path=row.capture_path,
        undo=None if undo is None else Undo.from_json(undo),
        reversible=bool(row.reversible),
        state=JournalState(row.state),
        status=row.status,
        response_headers=json.loads(row.response_headers),
        response_body=row.response_body,
        response_body_sha256=row.response_body_sha256,
        response_body_size=row.response_body_size,
        error=row.error,
        timings=json.loads(row.timings),
        completed_at=None if row.completed_at is None else parse_iso(row.completed_at),
        approval=_loads_or_none(row.approval),
        after=_loads_or_none(row.after),
        rolled_back_plan=row.rolled_back_plan,
        rolled_back_at=_parse_or_none(row.rolled_back_at),
        mode=row.mode,
        would_decide=row.would_decide,
        sealed=row.sealed,
        sealed_outcome=row.sealed_outcome,
        irreversible_reason=row.irreversible_reason,
        resend_key=row.resend_key,
    )


def freeze_from_values(id: str, scope: str, target: str | None, reason: str, by: str,
                       at: str) -> Freeze:
    return Freeze(FreezeScope(scope), target, reason, by, parse_iso(at), id)


def audit_from_row(row: AuditRow) -> AuditRecord:
    return AuditRecord(row.seq, parse_iso(row.at), row.actor, row.action,
                       json.loads(row.detail), row.prev_hash, row.hash)


AUDIT_COLUMNS = ("seq", "at", "actor", "action", "detail", "prev_hash", "hash")
SELECT_LAST_AUDIT = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY seq DESC LIMIT 1"
INSERT_AUDIT = (f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in AUDIT_COLUMNS)})")


def audit_params(record: AuditRecord) -> tuple[Any, ...]:
    return (record.seq, iso(record.at), record.actor, record.action, dumps(record.detail),
            record.prev_hash, record.hash)


def audit_from_values(values: Sequence[Any]) -> AuditRecord:
    seq, at, actor, action, detail, prev_hash, hash_ = values
    return AuditRecord(seq, parse_iso(at), actor, action, json.loads(detail), prev_hash, hash_)


# Held calls -------------------------------------------------------------------
def votes_text(votes: Sequence[Vote]) -> str:
    """The one text of ``votes``: what is stored and what the CAS updates compare."""
    return json.dumps([v.to_json() for v in votes], ensure_ascii=False, sort_keys=True,
                      separators=(",", ":"))


def _votes(text: str) -> tuple[Vote, ...]:
    return tuple(Vote(v["by"], v["role"], parse_iso(v["at"]), v.get("comment"))
                 for v in json.loads(text))


def _names_or_null(names: tuple[str, ...] | None) -> str | None:
    return None if names is None else dumps(list(names))


def _names_or_none(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


APPROVAL = "approval"  # the purpose a held call's exact request is sealed for
APPROVAL_RESPONSE = "approval-response"


def held_row(call: HeldCall, sealer: Sealer = NO_SEALER) -> ApprovalRow:
    """The row of ``call``: query, headers and body redacted in their columns; the exact
    request (what an approval executes) sealed beside them (``gateway.core.seal``)."""
    cp = call.checkpoint
    exact = {"query": call.query, "headers": [list(h) for h in call.headers],
             "body": seal.b64(bytes(call.body))}
    return ApprovalRow(
        id=call.id, at=iso(call.at), agent=call.agent, upstream=call.upstream,
        method=call.method, raw_path=call.raw_path, query=redact_query(call.query),
        headers=dumps([list(h) for h in redact_headers(call.headers).items()]),
        body=redacted_body(bytes(call.body), _content_type(call.headers)),
        # Without a key (PostgreSQL with no journal_key), a request that carries secrets
        # is not kept at all (approving it is 409 sealed_unavailable); others are kept plain.
        sealed=(sealer.seal if carries_secrets(call.query, call.headers, bytes(call.body),
                                               _content_type(call.headers))
                else sealer.keep)(exact, APPROVAL),
        sealed_response=held_response_sealed(call.response, sealer),
        run=cp.run, model=cp.model, prompt_version=cp.prompt_version,
        tool_version=cp.tool_version, rule=call.rule, policy_revision=call.policy_revision,
        digest=call.digest, required=call.required, roles=_names_or_null(call.roles),
        operators=_names_or_null(call.operators), expires_at=_iso_or_null(call.expires_at),
        status=call.status.value, votes=votes_text(call.votes), decided_by=call.decided_by,
        decided_at=_iso_or_null(call.decided_at), reason=call.reason,
        lease_until=_iso_or_null(call.lease_until), response=held_response_text(call.response),
        journal_id=call.journal_id, error=call.error, extra=dumps(call.extra),
        due_at=_iso_or_null(call.due_at),
    )


def held_response_text(response: dict[str, Any] | None,
                       hidden: frozenset[str] = frozenset()) -> str | None:
    """An executed call's response as its readable column holds it: redacted, and
    without ``hidden`` (its call's secrets it repeats)."""
    return dumps_or_null(redacted_response(response, hidden))


def held_response_sealed(response: dict[str, Any] | None, sealer: Sealer,
                         hidden: frozenset[str] = frozenset()) -> str | None:
    """The same response exactly (the agent's status URL returns it), sealed."""
    if response is None:
        return None
    keep = sealer.keep if redacted_response(response, hidden) == response else sealer.seal
    return keep(response, APPROVAL_RESPONSE)


def held_response(row: ApprovalRow | LeftWriteRow, sealer: Sealer) -> dict[str, Any] | None:
    """A kept answer (a held call's, or a left write's): exactly, else redacted."""
    if row.sealed_response is not None:
        try:
            return sealer.open(row.sealed_response, APPROVAL_RESPONSE)  # type: ignore[no-any-return]
        except SealError:
            pass  # the redacted one below
    return _loads_or_none(row.response)  # type: ignore[no-any-return]


def _content_type(headers: Sequence[tuple[str, str]]) -> str | None:
    return next((v for k, v in headers if k.lower() == "content-type"), None)


def held_from_row(row: ApprovalRow, sealer: Sealer = NO_SEALER) -> HeldCall:
    """The held call as the agent sent it; when its sealed request cannot be opened, the
    redacted one with ``extra["sealed_error"]`` saying why (approving it is refused)."""
    query, body = row.query, bytes(row.body)
    headers = tuple((name, value) for name, value in json.loads(row.headers))
    extra = json.loads(row.extra)
    if row.sealed is not None:
        try:
            exact = sealer.open(row.sealed, APPROVAL)
            query, body = exact["query"], seal.unb64(exact["body"])
            headers = tuple((name, value) for name, value in exact["headers"])
        except SealError as exc:
            extra = {**extra, "sealed_error": str(exc)}
    return HeldCall(
        id=row.id, at=parse_iso(row.at), agent=row.agent, upstream=row.upstream,
        method=row.method, raw_path=row.raw_path, query=query,
        headers=headers,
        body=body,
        checkpoint=Checkpoint(row.run, row.model, row.prompt_version, row.tool_version),
        rule=row.rule, policy_revision=row.policy_revision, digest=row.digest,
        required=row.required, roles=_names_or_none(row.roles),
        operators=_names_or_none(row.operators), expires_at=_parse_or_none(row.expires_at),
        status=ApprovalStatus(row.status), votes=_votes(row.votes),
        decided_by=row.decided_by, decided_at=_parse_or_none(row.decided_at),
        reason=row.reason, lease_until=_parse_or_none(row.lease_until),
        response=held_response(row, sealer), journal_id=row.journal_id, error=row.error,
        extra=extra, due_at=_parse_or_none(row.due_at),
    )


# Rollback plans ---------------------------------------------------------------
def plan_row(plan: Plan, updated_at: datetime) -> RollbackPlanRow:
    return RollbackPlanRow(
        id=plan.id, created_at=iso(plan.created_at), by=plan.by, selector=dumps(plan.selector),
        force=plan.force, status=plan.status.value, irreversible=dumps(list(plan.irreversible)),
        skipped=dumps(list(plan.skipped)), updated_at=iso(updated_at))


def step_row(plan_id: str, step: Step, updated_at: datetime) -> RollbackStepRow:
    return RollbackStepRow(
        plan_id=plan_id, seq=step.seq, entry_id=step.entry_id, upstream=step.upstream,
        method=step.method, path=step.path, body=dumps_or_null(step.body),
        content_type=step.content_type, target=step.target,
        expected=dumps_or_null(step.expected), volatile=dumps(list(step.volatile)),
        status=step.status.value, detail=step.detail, journal_id=step.journal_id,
        sealed=step.sealed, updated_at=iso(updated_at))


def step_from_row(row: RollbackStepRow) -> Step:
    return Step(
        seq=row.seq, entry_id=row.entry_id, upstream=row.upstream, method=row.method,
        path=row.path, body=_loads_or_none(row.body), content_type=row.content_type,
        target=row.target, expected=_loads_or_none(row.expected),
        volatile=tuple(json.loads(row.volatile)), status=StepStatus(row.status),
        detail=row.detail, journal_id=row.journal_id, sealed=row.sealed)


def plan_from_rows(row: RollbackPlanRow, steps: Sequence[RollbackStepRow]) -> Plan:
    """The plan, its steps in ``seq`` order whatever order ``steps`` came in."""
    return Plan(
        id=row.id, created_at=parse_iso(row.created_at), by=row.by,
        selector=json.loads(row.selector), force=bool(row.force),
        status=PlanStatus(row.status),
        steps=tuple(step_from_row(s) for s in sorted(steps, key=lambda s: s.seq)),
        irreversible=tuple(json.loads(row.irreversible)), skipped=tuple(json.loads(row.skipped)))
