"""Back-pressure toward a slow upstream: ``max_in_flight: N`` in its policy file.

At most N of an agent's calls to that upstream are under way at once in this
process (from the capture GET, or the read, until the upstream's answer head);
one more is refused at once with 503 ``upstream_busy`` and ``Retry-After``,
before anything is sent, so a slow upstream cannot pile up hundreds of waiting
calls in the gateway and the upstream alike. Approved and delayed calls, and
rollback's compensations, are operators' and are not limited. The count is
per process: with several workers, the fleet's limit is N per worker.

An upstream without ``max_in_flight`` (most) gets one shared no-op slot: the
read path pays no generator-based context manager for a limit it does not have.
"""

from __future__ import annotations

from types import TracebackType

from gateway.core.policy.compiled import Upstream
from gateway.errors import UpstreamBusy


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
            raise UpstreamBusy(f"{self._limit} calls to {self._name} are under way "
                               "(max_in_flight); this one was not sent, retry later")
        self._counts[self._name] = count + 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._counts[self._name] -= 1


class InFlightLimits:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def slot(self, upstream: Upstream) -> _Unlimited | _Slot:
        """Hold one of the upstream's slots for the block; UpstreamBusy when none is free."""
        limit = getattr(upstream.spec, "max_in_flight", None)
        if limit is None:
            return _UNLIMITED
        return _Slot(self._counts, upstream.name, limit)

    def in_flight(self, name: str) -> int:
        return self._counts.get(name, 0)
