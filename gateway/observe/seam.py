"""The seam itself: what the listener and the pipeline call, and the no-op behind it.

``Observer.begin`` is called once per agent call, ``Watch.step`` around each
capture, journal write and upstream request, and ``Watch.finish`` once at
the end. The classes here do nothing; ``gateway.observe.observer`` has the
ones that measure, trace and log.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

CAPTURE = "capture"  # the prior-state GET before a write
JOURNAL = "journal"  # the journal's intent row (a new entry)
JOURNAL_OUTCOME = "journal.outcome"  # the journal's outcome update
UPSTREAM = "upstream"  # the call forwarded to the upstream

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class CallRecord:
    """One agent call as it ended: what the metrics, the span and the access log say."""

    request_id: str
    agent: str | None
    upstream: str  # a configured upstream, else "_other" (a bounded label)
    method: str
    path: str
    decision: str = "error"
    status: int = 500
    mode: str | None = None  # observe | shadow, when the rule's mode was not enforce
    would_decide: str | None = None  # what the rules decided, when the mode did not enforce it


class Step:
    """One timed step of a call; this one does nothing."""

    __slots__ = ()

    def __enter__(self) -> Step:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        return None

    def propagate(self, headers: Headers) -> Headers:
        """The headers of a request sent in this step, with the trace context if traced."""
        return headers


NO_STEP = Step()


class Watch:
    """One call as it is observed; this one does nothing."""

    __slots__ = ()

    def step(self, name: str, upstream: str) -> Step:
        return NO_STEP

    def finish(self, record: CallRecord) -> None:
        """The agent's call has been answered (or has failed): record it once."""

    def end(self) -> None:
        """A call made for an operator (an approved call) is done: no agent-call record."""


NO_WATCH = Watch()


class Observer:
    """Makes the watch of each call; this one watches nothing."""

    def begin(self, headers: list[tuple[bytes, bytes]]) -> Watch:
        """A new call, with the agent's request headers (for an incoming trace context)."""
        return NO_WATCH

    async def close(self) -> None:
        """Flush what is buffered (spans) before the process exits."""


NO_OBSERVER = Observer()
