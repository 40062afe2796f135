"""Tripwires: automatic stop conditions on agents' writes.

A tripwire watches the writes that pass the policy and stops them when they
look like a runaway: too many writes or deletes in a window, a body field
(say a refund ``amount``) adding up past a budget, a write outside office
hours, or an upstream failing too often. A trip either freezes writes (the
kill switch, ``action: freeze``) or holds the calls for approval
(``action: hold``) for the rest of the window.

``TripwireState`` is pure: it keeps sliding windows per (tripwire, key) and
is told the time. ``check_write`` runs before a write is forwarded and counts
it when it passes, so the write that would go over the limit is the one that
trips (``limit: 10`` lets ten through per window). ``record_outcome`` runs
after, for ``error_rate``. The adapter (``gateway.services.tripwires``) acts on the
``Trip`` values it returns.

The specs as written, and where each applies, are ``gateway.core.tripwire_spec``.

>>> from gateway.core.tripwire_spec import TripwireSpec, compile_tripwires
>>> spec = TripwireSpec(id="bulk", kind="writes", limit=1)
>>> state = TripwireState(compile_tripwires([], {"crm": [spec]}))
>>> at = datetime.fromisoformat("2024-05-01T12:00:00+00:00")
>>> state.check_write("crm", "bot", "PATCH", None, at) is None
True
>>> state.check_write("crm", "bot", "PATCH", None, at).reason
'tripwire bulk: 2 writes in 60s by agent bot (limit 1)'
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.core.model import Freeze, FreezeScope, iso
from gateway.core.tripwire_spec import Tripwire, TripwireSpec

_BUCKETS = 1000  # a window keeps at most this many buckets: memory is bounded, not the call rate
_SWEEP_EVERY = 60.0  # seconds between drops of idle windows and lapsed holds
_ORDER = {FreezeScope.GLOBAL: 0, FreezeScope.UPSTREAM: 1, FreezeScope.AGENT: 2}


@dataclass(frozen=True, slots=True)
class Trip:
    """A tripwire went off for one call. ``fresh`` is False for a call under an earlier hold."""

    tripwire: str
    kind: str
    action: Literal["freeze", "hold"]
    scope: FreezeScope
    target: str | None
    reason: str
    upstream: str
    agent: str
    defined_in: str  # "settings" or the policy file's upstream
    fresh: bool = True
    until: datetime | None = None  # for a hold: when it lapses

    @property
    def by(self) -> str:
        return f"tripwire:{self.tripwire}"

    def freeze(self, at: datetime) -> Freeze:
        return Freeze(self.scope, self.target, self.reason, self.by, at)

    def detail(self) -> dict[str, Any]:
        return {"tripwire": self.tripwire, "kind": self.kind, "action": self.action,
                "scope": self.scope.value, "target": self.target, "reason": self.reason,
                "upstream": self.upstream, "agent": self.agent, "defined_in": self.defined_in,
                "until": iso(self.until) if self.until is not None else None}


@dataclass(slots=True)
class _Bucket:
    start: float
    last: float
    count: int
    total: float
    errors: int


@dataclass(slots=True)
class _Window:
    """Events of the last ``span`` seconds, merged into at most ``_BUCKETS`` buckets.

    An event stays until ``span`` after the newest event of its bucket, so a
    window may count an event up to ``span / _BUCKETS`` longer: never shorter.
    """

    span: float
    buckets: deque[_Bucket] = field(default_factory=deque)
    count: int = 0
    total: float = 0.0
    errors: int = 0

    def prune(self, now: float) -> None:
        while self.buckets and self.buckets[0].last <= now - self.span:
            gone = self.buckets.popleft()
            self.count -= gone.count
            self.total -= gone.total
            self.errors -= gone.errors
        if not self.buckets:
            self.count, self.total, self.errors = 0, 0.0, 0

    def add(self, now: float, value: float = 0.0, error: bool = False) -> None:
        last = self.buckets[-1] if self.buckets else None
        if last is not None and last.last <= now < last.start + self.span / _BUCKETS:
            last.last, last.count = now, last.count + 1
            last.total, last.errors = last.total + value, last.errors + error
        else:
            self.buckets.append(_Bucket(now, now, 1, value, int(error)))
        self.count, self.total, self.errors = (self.count + 1, self.total + value,
                                               self.errors + error)


class TripwireState:
    """Every tripwire's windows and holds; all time comes in as arguments."""

    def __init__(self, tripwires: Iterable[Tripwire] = ()) -> None:
        self._tripwires: tuple[Tripwire, ...] = ()
        self._windows: dict[tuple[tuple[str, str], str], _Window] = {}
        self._holds: dict[tuple[tuple[str, str], str | None], tuple[float, Trip]] = {}
        self._swept = -math.inf
        self.configure(tripwires)

    @property
    def tripwires(self) -> tuple[Tripwire, ...]:
        return self._tripwires

    def configure(self, tripwires: Iterable[Tripwire]) -> None:
        """Replace the tripwires; an unchanged one keeps its windows and holds."""
        new = tuple(tripwires)
        old = {t.key: t for t in self._tripwires}
        kept = {t.key for t in new if old.get(t.key) == t}
        self._windows = {k: w for k, w in self._windows.items() if k[0] in kept}
        self._holds = {k: h for k, h in self._holds.items() if k[0] in kept}
        self._tripwires = new

    def shared_windows(self, upstream: str, agent: str, method: str,
                       body: Any) -> list[tuple[str, float, float]]:
        """The count windows this write adds to, as kept in a store shared by every process:
        (window name, value this write adds, the window's length in seconds)."""
        out = []
        for tw in self._tripwires:
            spec = tw.spec
            if spec.kind not in ("writes", "deletes", "sum") \
                    or not tw.applies(upstream, agent, method):
                continue
            value = _adds(spec, body)
            if value is None:
                continue
            owner, tripwire = tw.key
            out.append((f"{owner}/{tripwire}/{tw.counted_by(upstream, agent)}", value,
                        spec.window))
        return out

    def check_write(self, upstream: str, agent: str, method: str, body: Any,
                    now: datetime,
                    shared: Mapping[str, tuple[int, float]] | None = None) -> Trip | None:
        """Before a write is forwarded: a ``Trip`` stops it; None counts it and lets it go.

        ``shared``: the windows' counts and totals before this write, by the names
        ``shared_windows`` gave, when a store shared by every process keeps them (and
        has counted this write already); the windows kept here are then not used."""
        t = now.timestamp()
        self._sweep(t)
        watching = [tw for tw in self._tripwires if tw.applies(upstream, agent, method)]
        trips: list[Trip] = []
        counted: list[tuple[_Window, float]] = []
        for tw in watching:
            held = self._holds.get((tw.key, tw.target(upstream, agent)))
            if held is not None and held[0] > t:
                trips.append(replace(held[1], fresh=False, upstream=upstream, agent=agent))
                continue
            spec = tw.spec
            if spec.kind == "error_rate":
                continue  # judged on outcomes (record_outcome); here only its holds apply
            if spec.kind == "hours":
                assert spec.allowed_hours is not None
                if not spec.allowed_hours.allows(now):
                    local = now.astimezone(ZoneInfo(spec.allowed_hours.timezone))
                    trips.append(self._trip(tw, upstream, agent, now, (
                        f"write by agent {agent} at {local:%a %H:%M} is outside the allowed "
                        f"hours ({spec.allowed_hours.describe()})")))
                continue
            value = _adds(spec, body)
            if value is None:
                continue
            owner, tripwire = tw.key
            kept = None if shared is None else shared.get(
                f"{owner}/{tripwire}/{tw.counted_by(upstream, agent)}")
            window = None
            if kept is None:
                window = self._window(tw, upstream, agent, t)
                kept = window.count, window.total
            count, total = kept
            assert spec.limit is not None
            if spec.kind == "sum":
                if total + value > spec.limit:
                    trips.append(self._trip(tw, upstream, agent, now, (
                        f"{spec.field} totals {_num(total + value)} in "
                        f"{_num(spec.window)}s {_who(tw, upstream, agent)} "
                        f"(limit {_num(spec.limit)})")))
                    continue
            elif count + 1 > spec.limit:
                trips.append(self._trip(tw, upstream, agent, now, (
                    f"{count + 1} {spec.kind} in {_num(spec.window)}s "
                    f"{_who(tw, upstream, agent)} (limit {_num(spec.limit)})")))
                continue
            if window is not None:
                counted.append((window, value))
        if trips:
            return self._strongest(trips)
        for window, value in counted:
            window.add(t, value)
        return None

    def record_outcome(self, upstream: str, agent: str, method: str, status: int | None,
                       now: datetime) -> Trip | None:
        """After a write: ``status`` None means it got no answer. Only error_rate listens."""
        t = now.timestamp()
        self._sweep(t)
        trips: list[Trip] = []
        for tw in self._tripwires:
            spec = tw.spec
            if spec.kind != "error_rate" or not tw.applies(upstream, agent, method):
                continue
            window = self._window(tw, upstream, agent, t)
            window.add(t, error=status is None or status >= 500)
            assert spec.limit is not None
            if window.count >= (spec.min_calls or 10) and window.errors / window.count > spec.limit:
                trips.append(self._trip(tw, upstream, agent, now, (
                    f"{window.errors} of {window.count} writes failed "
                    f"({_num(100 * window.errors / window.count)}%) in {_num(spec.window)}s "
                    f"{_who(tw, upstream, agent)} (limit {_num(100 * spec.limit)}%)")))
                # The errors that tripped it have been acted on: start afresh, so a
                # released freeze is not engaged again by the same old failures.
                del self._windows[(tw.key, tw.counted_by(upstream, agent))]
        return self._strongest(trips) if trips else None

    def _window(self, tw: Tripwire, upstream: str, agent: str, t: float) -> _Window:
        key = (tw.key, tw.counted_by(upstream, agent))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(tw.spec.window)
        window.prune(t)
        return window

    def _trip(self, tw: Tripwire, upstream: str, agent: str, now: datetime, what: str) -> Trip:
        """A fresh trip; a hold also covers the tripwire's later calls for one window."""
        spec = tw.spec
        target = tw.target(upstream, agent)
        until = now + timedelta(seconds=spec.window) if spec.action == "hold" else None
        trip = Trip(spec.id, spec.kind, spec.action, spec.freeze_scope, target,
                    f"tripwire {spec.id}: {what}", upstream, agent, tw.owner or "settings",
                    until=until)
        if until is not None:
            self._holds[(tw.key, target)] = (until.timestamp(), trip)
        return trip

    @staticmethod
    def _strongest(trips: list[Trip]) -> Trip:
        """A freeze before a hold, a fresh trip before an old hold, wider scopes first."""
        return min(trips, key=lambda tr: (tr.action != "freeze", not tr.fresh, _ORDER[tr.scope]))

    def _sweep(self, t: float) -> None:
        if t - self._swept < _SWEEP_EVERY:
            return
        self._swept = t
        for key, window in list(self._windows.items()):
            window.prune(t)
            if not window.buckets:
                del self._windows[key]
        self._holds = {k: h for k, h in self._holds.items() if h[0] > t}


def number_at(body: Any, path: str) -> float | None:
    """The finite number at a dotted path (``data.amount``, ``items.0.amount``), else None.

    Numeric strings count too: form-encoded bodies (Stripe's) carry only strings.

    >>> number_at({"data": {"amount": "12.5"}}, "data.amount"), number_at({"amount": True}, "amount")
    (12.5, None)
    """
    value = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _adds(spec: TripwireSpec, body: Any) -> float | None:
    """What a write adds to a count window: 1, or for ``sum`` the positive amount at
    its field; None when a ``sum`` finds none (the write is not counted)."""
    if spec.kind != "sum":
        return 1.0
    found = number_at(body, spec.field or "")
    return found if found is not None and found > 0 else None


def _who(tw: Tripwire, upstream: str, agent: str) -> str:
    return {"agent": f"by agent {agent}", "upstream": f"to upstream {upstream}",
            "global": "in total"}[tw.spec.per]


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")
