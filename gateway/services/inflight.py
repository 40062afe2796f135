"""Back-pressure toward a slow upstream: ``max_in_flight: N`` in its policy file.

At most N of an agent's calls to that upstream are under way at once in this
process (from the capture GET, or the read, until the upstream's answer head);
one more is refused at once with 503 ``upstream_busy`` and ``Retry-After``,
before anything is sent, so a slow upstream cannot pile up hundreds of waiting
calls in the gateway and the upstream alike. Approved and delayed calls, and
rollback's compensations, are operators' and are not limited. The count is
per process: with several workers, the fleet's limit is N per worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.core.policy.compiled import Upstream
from gateway.errors import UpstreamBusy


class InFlightLimits:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    @contextmanager
    def slot(self, upstream: Upstream) -> Iterator[None]:
        """Hold one of the upstream's slots for the block; UpstreamBusy when none is free."""
        limit = getattr(upstream.spec, "max_in_flight", None)
        if limit is None:
            yield
            return
        name = upstream.name
        count = self._counts.get(name, 0)
        if count >= limit:
            raise UpstreamBusy(f"{limit} calls to {name} are under way (max_in_flight); "
                               "this one was not sent, retry later")
        self._counts[name] = count + 1
        try:
            yield
        finally:
            self._counts[name] -= 1

    def in_flight(self, name: str) -> int:
        return self._counts.get(name, 0)
