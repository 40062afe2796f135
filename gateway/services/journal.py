"""A write's life in the journal: entry, intent, outcome, settled.

    entry   -> the ``JournalEntry`` of a write, built one way for an agent's
               write (``gateway.services.pipeline``) and a rollback's
               compensation (``gateway.services.rollbacks``); an agent's write
               carries its undo (``undo_for``), the true one sealed
    intent  -> committed before anything is sent; the store refuses one a
               freeze covers (``Store.journal_intent``); the id is ``pending``
    outcome -> what the upstream answered (or did not), journaled after the
               agent has its answer, retried while the store is down
    settled -> until every outcome answered so far is journaled (read your writes)

The rules (``CONTRACT.md`` "The life of a write under faults"): ``failed`` only
when nothing can have reached the upstream, ``unknown`` otherwise (the undo is
kept: rollback reconciles it by reading the resource). An outcome is never
dropped while this process lives; after ``OUTCOME_RETRY`` seconds, or a crash,
recovery journals it ``unknown`` (``gateway.services.recovery``), and an intent
this process no longer holds in ``pending`` yet the store lacks the outcome of
was lost by the store (``lost_outcomes``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from gateway.core import journal as journaling
from gateway.core import undo as undoing
from gateway.core.model import (
    Checkpoint,
    JournalEntry,
    JournalOutcome,
    JournalState,
    Undo,
    new_id,
    utcnow,
)
from gateway.core.policy.compiled import Upstream
from gateway.core.policy.mcp_schema import McpRule
from gateway.core.policy.schema import Rule
from gateway.core.redact import redact_headers, redact_query
from gateway.core.seal import NO_SEALER, Sealer
from gateway.deadline import cancelled
from gateway.errors import GatewayError, JournalUnavailable
from gateway.group_commit import GroupCommit
from gateway.observe import JOURNAL, JOURNAL_OUTCOME, NO_WATCH, Step, Watch
from gateway.ports import JournalStore, Observed, UpstreamResponse
from gateway.services import sealing
from gateway.services.call import Answer, Call, Sender
from gateway.services.killswitch import FreezeState
from gateway.settings import Settings

log = logging.getLogger("gateway.pipeline")  # the records this module writes kept their name
OUTCOME_RETRY = 600.0  # seconds an outcome is retried while the store is down
BATCH = 512  # outcomes saved at once at most (``later``)
LOST = ("its outcome was saved, then lost by the store (a database crash); the write "
        "was sent and may have landed")
_UNPARSED: Any = object()  # no parsed body given: ``store_body`` parses it


class Journal:
    """One per process (``gateway.app``), handed to the pipeline, rollbacks and recovery."""

    def __init__(self, settings: Settings, store: JournalStore, freezes: FreezeState,
                 sealer: Sealer = NO_SEALER) -> None:
        self.settings = settings
        self.store = store
        self.freezes = freezes
        self.sealer = sealer  # the store's: seals what the journal must not show
        # outcomes journaled after the reply, a batch at a time (``later``); the last one
        # answered; and those saved apart after their batch failed
        self._batches = GroupCommit(store.journal_outcomes, BATCH)
        self._last: asyncio.Future[bool] | None = None
        self._outcomes: set[asyncio.Task[None]] = set()
        self.pending: set[str] = set()  # entries journaled as intents, outcome not yet saved

    # -- entry -----------------------------------------------------------------

    def entry(self, *, request_id: str, agent: str, checkpoint: Checkpoint, upstream: str,
              method: str, path: str, query: str, rule: str | None, decision: str,
              policy_revision: str, headers: list[tuple[str, str]], body: bytes,
              content_type: str | None, prior: Any, prior_status: int | None,
              capture_path: str | None, undo: Undo | None, reversible: bool,
              parsed: Any = _UNPARSED, entry_id: str | None = None,
              **more: Any) -> JournalEntry:
        """The entry of a write about to be sent: headers, query and body redacted, the
        body kept up to ``journal_body_limit`` (``parsed``: the body as already read)."""
        stored = journaling.store_body(body, content_type, self.settings.journal_body_limit,
                                       *(() if parsed is _UNPARSED else (parsed,)))
        return JournalEntry(
            id=entry_id or new_id(), at=utcnow(), request_id=request_id, agent=agent,
            checkpoint=checkpoint, upstream=upstream, method=method, path=path,
            query=redact_query(query), rule=rule, decision=decision,
            policy_revision=policy_revision, request_headers=redact_headers(headers),
            request_body=stored.text, request_body_sha256=stored.sha256,
            request_body_size=stored.size, request_content_type=content_type, prior=prior,
            prior_status=prior_status, capture_path=capture_path, undo=undo,
            reversible=reversible, **more)

    def undo_for(self, rule: Rule | McpRule | None, method: str, path: str,
                 params: dict[str, str], seen: Observed | None, sent: Any,
                 content_type: str | None) -> sealing.Kept:
        """A write's undo, inferred once (``gateway.core.undo``): as journaled (from the
        redacted prior), the true one sealed beside it (``seen``: the capture, None when
        there was none)."""
        return sealing.for_intent(self.sealer, undoing.infer(
            rule, method, path, params, seen, sent, content_type,
            self.settings.journal_body_limit))

    # -- intent ----------------------------------------------------------------

    async def intent(self, upstream: Upstream, call: Call, entry: JournalEntry,
                     unsent: str) -> None:
        """Commit the intent before anything is sent; the store refuses one a freeze covers
        (a freeze this process may not have heard of yet: a shadow run stops like any
        other writer). ``unsent`` says what the agent is told on a store error."""
        try:
            with call.watch.step(JOURNAL, upstream.name):
                journaled = await self.store.journal_intent(entry)
        except Exception as exc:
            log.error("journal unavailable: %s", exc)
            raise JournalUnavailable(f"the change journal could not be written; {unsent}") \
                from exc
        if not journaled:
            await self.freezes.refused(upstream.name, call.agent)
        elif entry.state is JournalState.INTENT:  # a shadowed write has no outcome to wait for
            self.pending.add(entry.id)

    async def compensation_intent(self, entry: JournalEntry) -> None:
        """A rollback's compensation: recovery is not frozen; a store error is the caller's."""
        await self.store.journal_intent(entry, unless_frozen=False)
        self.pending.add(entry.id)

    # -- outcome ---------------------------------------------------------------

    def later(self, entry: JournalEntry, outcome: JournalOutcome, watch: Watch) -> None:
        """Journal ``outcome`` once the agent has its answer (the intent is already durable).

        Submitted to a group commit, not a task of its own: what is answered while a
        batch is saved goes in the next (``store.journal_outcomes``; a task per outcome
        was 2.4% of the CPU of a PATCH on PostgreSQL at 32 connections). An outcome
        whose batch the store fails is then saved on its own, retried as
        ``save_outcome`` does."""
        step = watch.step(JOURNAL_OUTCOME, entry.upstream)
        step.__enter__()  # timed from now until saved
        saved = self._batches.submit((entry.id, outcome))
        saved.add_done_callback(functools.partial(self._saved, entry, outcome, step))
        self._last = saved

    def _saved(self, entry: JournalEntry, outcome: JournalOutcome, step: Step,
               saved: asyncio.Future[bool]) -> None:
        exc = saved.exception()
        if isinstance(exc, asyncio.CancelledError):  # the process is stopping: the intent
            return  # stays pending, and recovery journals it unknown at the next start
        if exc is not None:  # the store is down
            step.__exit__(type(exc), exc, exc.__traceback__)
            self._save_apart(entry, outcome)
            return
        step.__exit__(None, None, None)
        self.pending.discard(entry.id)
        if not saved.result():
            log.error("no intent for the outcome of %s", entry.id)

    def _save_apart(self, entry: JournalEntry, outcome: JournalOutcome) -> None:
        task = asyncio.get_running_loop().create_task(
            self.save_outcome(entry, outcome, NO_WATCH))
        self._outcomes.add(task)
        task.add_done_callback(self._outcomes.discard)

    async def settled(self) -> None:
        """Until every outcome of a write answered so far is journaled (read your
        writes): the last one answered (they are saved in order), then those saved
        apart. Not the outcomes answered while it waits, or a stream of writes would
        hold it up until the stream stops. Waiting is all it does: a caller that gives
        up (cancelled) cancels no save."""
        if self._last is not None:  # even done: its callback may be still to run
            await asyncio.wait([self._last])  # when this returns, it and those before ran
        apart = list(self._outcomes)
        if apart:
            await asyncio.wait(apart)

    async def record_outcome(self, entry: JournalEntry, sender: Sender,
                             response: UpstreamResponse | None, error: GatewayError | None,
                             started: float, sent: Any = None) -> None:
        """Build and journal an outcome now (rollback's compensations: no read after)."""
        outcome = await self.outcome_of(entry, response, error, started, started, 0.0, None,
                                        sender, sent)
        await self.save_outcome(entry, outcome, NO_WATCH)

    async def outcome_of(self, entry: JournalEntry, response: UpstreamResponse | None,
                         error: GatewayError | None, started: float, sent: float,
                         capture_ms: float, upstream: Upstream | None,
                         sender: Sender, body: Any = None) -> JournalOutcome:
        """What the journal records once the upstream answered (or did not).
        ``sender`` reads the answer, and the resource after the write when the answer does
        not say what the write left (with ``upstream``); ``body``: what was sent, parsed
        (the answer may repeat its secrets)."""
        now = time.perf_counter()
        timings = {"capture_ms": round(capture_ms, 3), "upstream_ms": round((now - sent) * 1000, 3),
                   "total_ms": round((now - started) * 1000, 3)}
        undo, reversible = entry.undo, entry.reversible
        if response is None:  # failed only when nothing can have reached the upstream;
            # unknown keeps the undo: rollback reconciles it by reading the resource
            maybe_sent = error is None or error.maybe_sent
            state = JournalState.UNKNOWN if maybe_sent else JournalState.FAILED
            head = getattr(error, "head", None)  # a create's Location, before the break
            if head is not None and entry.method == "POST" and undo is None \
                    and upstream is not None and entry.capture_path is None \
                    and not rule_says_none(upstream, entry.rule):
                created = journaling.undo_for_created(
                    entry.path, urlsplit(upstream.base_url).path.rstrip("/"), head[0],
                    redact_headers(head[1]), None)
                if created is not None:
                    undo, reversible = Undo.from_json(created), True
            outcome = JournalOutcome(state, None, {}, None, None, 0, undo, reversible,
                                     error.message if error else None, timings, utcnow())
        else:
            headers = redact_headers(response.headers)
            answer = sender.answer(entry.method, response.body or b"",
                                   headers.get("content-type"), body)
            if answer.failed is not None:
                stored = journaling.store_body(answer.body, answer.content_type,
                                               self.settings.journal_body_limit, answer.shown)
                return JournalOutcome(JournalState.FAILED, response.status, headers,
                                      stored.text, stored.sha256, stored.size, undo,
                                      reversible, answer.failed, timings, utcnow())
            parsed = answer.parsed
            if entry.method == "POST" and undo is None and upstream is not None \
                    and entry.capture_path is None:
                created = journaling.undo_for_created(
                    entry.path, urlsplit(upstream.base_url).path.rstrip("/"), response.status,
                    headers, parsed)
                if created is not None and not (rule_says_none(upstream, entry.rule)):
                    undo, reversible = Undo.from_json(created), True
            stored = journaling.store_body(answer.body, answer.content_type,
                                           self.settings.journal_body_limit, answer.shown)
            after, true_after = await self._read_after(entry, response.status, answer, undo,
                                                       upstream, sender)
            outcome = JournalOutcome(JournalState.COMPLETED, response.status, headers,
                                     stored.text, stored.sha256, stored.size, undo, reversible,
                                     None, timings, utcnow(), after,
                                     sealing.for_outcome(self.sealer, parsed, after,
                                                         true_after))
        return outcome

    async def save_outcome(self, entry: JournalEntry, outcome: JournalOutcome,
                           watch: Watch) -> None:
        """Retried while the store is down (an outcome is never dropped while this
        process lives: after ``OUTCOME_RETRY`` seconds, or a crash, recovery journals
        it ``unknown``)."""
        delay, deadline = 0.05, time.monotonic() + OUTCOME_RETRY
        while True:
            try:
                with watch.step(JOURNAL_OUTCOME, entry.upstream):
                    await self.store.journal_outcome(entry.id, outcome)
                self.pending.discard(entry.id)
                return
            except LookupError:
                log.exception("no intent for the outcome of %s", entry.id)
                self.pending.discard(entry.id)
                return
            except Exception as exc:
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                if time.monotonic() + delay > deadline:
                    log.exception("could not journal the outcome of %s; gave up", entry.id)
                    self.pending.discard(entry.id)
                    return
                log.warning("could not journal the outcome of %s (%s); retrying", entry.id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _read_after(self, entry: JournalEntry, status: int, answer: Answer,
                          undo: Undo | None, upstream: Upstream | None,
                          sender: Sender) -> tuple[Any, Any]:
        """The resource as the write left it, read only when the response does not say:
        as journaled (redacted; a text or binary resource as its digest) and its true value.

        Rollback compares this with the resource before compensating (drift);
        most APIs answer a write with the resource, so this read is rare.
        """
        if upstream is None or not 200 <= status < 300 or entry.method == "DELETE":
            return None, None
        if answer.says_state:
            return None, None
        target = entry.capture_path or (undo.path if undo is not None and
                                        undo.method == "DELETE" else None)
        if target is None:
            return None, None
        try:
            seen = await sender.read(upstream, target)
        except GatewayError as exc:
            log.warning("read after %s %s failed (%s); rollback will need force",
                        entry.method, entry.path, exc.message)
            return None, None
        if not 200 <= seen.status < 300:
            log.warning("read after %s %s answered %s (does the policy inject a credential?); "
                        "rollback will need force", entry.method, entry.path, seen.status)
            return None, None
        true = sealing.true_state(seen)
        if answer.read_as_value or isinstance(seen.value, (dict, list)):
            return seen.value, true
        return true, true  # a digest: nothing of the bytes themselves

    # -- reconcile -------------------------------------------------------------

    async def lost_outcomes(self, process: str, before: datetime) -> None:
        """``process``'s (this one's) intents older than ``before`` whose outcome it no
        longer holds, yet the store lacks (saved, then lost in a database crash:
        PostgreSQL's outcomes commit without waiting for the disk): ``unknown``, as a
        dead process's."""
        pending = set(self.pending)
        lost = [i for i in await self.store.stale_intents(process, before)
                if i not in pending]
        if lost:
            logging.getLogger("gateway.recovery").error(
                "%d outcomes were lost by the store (a database crash?); journaled unknown: "
                "%s", len(lost), ", ".join(lost[:20]))
            await self.store.abandon_intents(lost, LOST, utcnow())


def rule_says_none(upstream: Upstream, rule_id: str | None) -> bool:
    rule = upstream.rule(rule_id)
    return rule is not None and rule.undo == "none"
