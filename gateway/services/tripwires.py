"""Tripwires at run time: the pipeline's hook around each agent write.

``gateway.core.tripwires`` decides; this adapter reads the clock and acts.
A ``freeze`` trip engages the kill switch (``by: tripwire:<id>``) before the
tripping call is answered 423, so nothing the freeze covers is sent after it.
A ``hold`` trip hands the call, and the tripwire's later calls for one
window, to the approval queue. Every trip is audited (``tripwire.tripped``),
counted (``gateway_tripwires_tripped_total``) and logged.

With no tripwire configured both hooks return at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from gateway.core.model import Decision, Verdict, utcnow
from gateway.core.policy.compiled import CallView, Upstream
from gateway.core.policy.decide import PolicySet
from gateway.core.tripwire_spec import SettingsTripwire, compile_tripwires
from gateway.core.tripwires import Trip, TripwireState
from gateway.errors import (
    GatewayError,
    JournalUnavailable,
    UpstreamTimeout,
    UpstreamUnreachable,
    WritesFrozen,
)
from gateway.metrics import Metrics
from gateway.ports import TripwireStore
from gateway.services.call import Call
from gateway.services.killswitch import FreezeState

log = logging.getLogger("gateway.tripwires")


class Tripwires:
    def __init__(self, freezes: FreezeState, store: TripwireStore, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.freezes = freezes
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock  # tests set the time of day through it
        self.state = TripwireState()

    def configure(self, settings: Iterable[SettingsTripwire], policies: PolicySet) -> None:
        """The settings file's tripwires and every policy file's; unchanged ones keep counting."""
        tripwires = compile_tripwires(settings, {name: u.spec.tripwires
                                                 for name, u in policies.upstreams.items()})
        for tw in tripwires:
            unknown = sorted((tw.upstreams or set()) - set(policies.upstreams))
            if unknown:
                log.warning("tripwire %s names upstreams with no policy file: %s",
                            tw.spec.id, ", ".join(unknown))
        self.state.configure(tripwires)

    async def before_write(self, upstream: Upstream, call: Call, view: CallView,
                           decision: Decision) -> Decision | None:
        """None: send the write. A HOLD decision: hold it. Raises WritesFrozen on a freeze trip."""
        if not self.state.tripwires:
            return None
        now = self.clock()
        trip = self.state.check_write(upstream.name, call.agent, call.method, view.body, now,
                                      await self._shared(upstream, call, view, now))
        if trip is None:
            return None
        if trip.action == "hold":
            if trip.fresh:
                await self._report(trip, now)
            return Decision(Verdict.HOLD, trip.by, trip.reason, decision.revision, upstream.name,
                            decision.params)
        if not await self._freeze(trip, now):
            raise JournalUnavailable(f"{trip.reason}; the freeze could not be stored, "
                                     "the call was not sent")
        target = f" {trip.target}" if trip.target else ""
        raise WritesFrozen(f"writes are frozen ({trip.scope.value}{target}): {trip.reason}",
                           scope=trip.scope.value, target=trip.target, tripwire=trip.tripwire)

    async def _shared(self, upstream: Upstream, call: Call, view: CallView,
                      now: datetime) -> dict[str, tuple[int, float]] | None:
        """This write counted in the store's windows (shared by every process, kept across
        restarts); their counts before it. None when the store keeps none."""
        windows = self.state.shared_windows(upstream.name, call.agent, call.method, view.body)
        if not windows or not hasattr(self.store, "count_tripwire"):
            return None
        try:
            return {name: await self.store.count_tripwire(name, value, window, now)
                    for name, value, window in windows}
        except Exception as exc:  # fail closed: an uncounted write could pass a limit
            log.error("tripwire windows could not be counted: %s", exc)
            raise JournalUnavailable("the tripwire windows could not be counted in the store; "
                                     "the call was not sent") from exc

    async def after_write(self, upstream: Upstream, call: Call, outcome: int | GatewayError) -> None:
        """The upstream's status, or the error that kept it from answering (error_rate)."""
        if not self.state.tripwires:
            return
        if isinstance(outcome, GatewayError):
            if not isinstance(outcome, (UpstreamUnreachable, UpstreamTimeout)):
                return  # stopped by the gateway: the upstream was never asked
            status = None
        else:
            status = outcome
        now = self.clock()
        trip = self.state.record_outcome(upstream.name, call.agent, call.method, status, now)
        if trip is None:
            return
        if trip.action == "hold":
            await self._report(trip, now)
        else:
            await self._freeze(trip, now)

    async def _freeze(self, trip: Trip, now: datetime) -> bool:
        """Engage the trip's freeze; report it unless another call's trip got there first."""
        freeze = trip.freeze(now)
        try:
            stored = (await self.freezes.engage(freeze)).freeze
        except Exception:
            log.exception("tripwire %s could not engage its freeze", trip.tripwire)
            await self._report(trip, now)
            return False
        if stored.id == freeze.id:
            self.metrics.freeze_engaged()
            await self._report(trip, now)
        return True

    async def _report(self, trip: Trip, now: datetime) -> None:
        self.metrics.tripwire_tripped(trip.tripwire)
        log.warning("%s -> %s (%s%s)", trip.reason, trip.action, trip.scope.value,
                    f" {trip.target}" if trip.target else "")
        try:
            await self.store.append_audit(trip.by, "tripwire.tripped", trip.detail(), now)
        except Exception:
            log.exception("could not audit the trip of tripwire %s", trip.tripwire)
