"""Back-pressure toward a slow upstream: ``max_in_flight: N`` in its policy file.

At most N of the agents' calls to that upstream are under way at once in this
process (from the capture GET, or the read, until the upstream's answer head);
one more is refused at once with 503 ``upstream_busy`` and ``Retry-After``,
before anything is sent, so a slow upstream cannot pile up hundreds of waiting
calls in the gateway and the upstream alike. Approved and delayed calls, and
rollback's compensations, are operators' and are not limited. The workers of
one ``gateway serve --workers N`` share the count (``inflight_shared``); separate
processes (another machine, another ``gateway serve``) each count their own.

An upstream without ``max_in_flight`` (most) gets one shared no-op slot: the
read path pays no generator-based context manager for a limit it does not have.
"""

from __future__ import annotations

from types import TracebackType

from gateway.core.policy.compiled import Upstream
from gateway.errors import UpstreamBusy
from gateway.services.inflight_shared import SharedCounts


class _Unlimited:
    """The slot of an upstream without ``max_in_flight``: nothing to count."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


_UNLIMITED = _Unlimited()


class _Slot:
    """One of an upstream's ``max_in_flight`` slots, taken on entry, given back on exit."""

    __slots__ = ("_counts", "_name", "_limit")

    def __init__(self, counts: dict[str, int], name: str, limit: int) -> None:
        self._counts, self._name, self._limit = counts, name, limit

    def __enter__(self) -> None:
        count = self._counts.get(self._name, 0)
        if count >= self._limit:
            raise _busy(self._name, self._limit)
        self._counts[self._name] = count + 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._counts[self._name] -= 1


class _SharedSlot(_Slot):
    """A slot counted with the other workers of this master (this process's own count
    when their table has no room for the upstream)."""

    __slots__ = ("_shared", "_alone")

    def __init__(self, shared: SharedCounts, counts: dict[str, int], name: str,
                 limit: int) -> None:
        super().__init__(counts, name, limit)
        self._shared, self._alone = shared, False

    def __enter__(self) -> None:
        taken = self._shared.take(self._name, self._limit)
        if taken is None:
            self._alone = True
            super().__enter__()
        elif not taken:
            raise _busy(self._name, self._limit)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._alone:
            super().__exit__(kind, exc, tb)
        else:
            self._shared.give_back(self._name)


def _busy(name: str, limit: int) -> UpstreamBusy:
    return UpstreamBusy(f"{limit} calls to {name} are under way (max_in_flight); this one "
                        "was not sent, retry later")


class InFlightLimits:
    """``shared``: the counts of this master's workers (None: this process alone)."""

    def __init__(self, shared: SharedCounts | None = None) -> None:
        self._counts: dict[str, int] = {}
        self._shared = shared

    def slot(self, upstream: Upstream) -> _Unlimited | _Slot:
        """Hold one of the upstream's slots for the block; UpstreamBusy when none is free."""
        limit = getattr(upstream.spec, "max_in_flight", None)
        if limit is None:
            return _UNLIMITED
        if self._shared is not None:
            return _SharedSlot(self._shared, self._counts, upstream.name, limit)
        return _Slot(self._counts, upstream.name, limit)
