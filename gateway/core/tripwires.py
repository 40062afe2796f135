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
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.core.model import Freeze, FreezeScope, is_mutating, iso, method_list

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")  # it ends up in metric labels
_HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")
_BUCKETS = 1000  # a window keeps at most this many buckets: memory is bounded, not the call rate
_SWEEP_EVERY = 60.0  # seconds between drops of idle windows and lapsed holds
_ORDER = {FreezeScope.GLOBAL: 0, FreezeScope.UPSTREAM: 1, FreezeScope.AGENT: 2}

Kind = Literal["writes", "deletes", "sum", "hours", "error_rate"]
Per = Literal["agent", "upstream", "global"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowedHours(_Strict):
    start: str
    end: str
    days: tuple[str, ...] = DAYS
    timezone: str = "UTC"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1440:
            return f"{value // 60:02d}:{value % 60:02d}"  # YAML 1.1 reads 18:00 as 1080
        if not isinstance(value, str) or not _HHMM.match(value) or value > "24:00":
            raise ValueError(f"{value!r} is not a time of day like \"08:00\"")
        return value

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return value
        chosen: set[int] = set()
        for item in items:
            first, _, last = str(item).lower().partition("-")
            if first not in DAYS or last and last not in DAYS:
                raise ValueError(f"unknown day {item!r} (mon..sun, or a range like mon-fri)")
            a, b = DAYS.index(first), DAYS.index(last or first)
            chosen.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        return tuple(DAYS[i] for i in sorted(chosen))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (an IANA name like Europe/Paris)") from None
        return value

    @model_validator(mode="after")
    def _span(self) -> AllowedHours:
        if self.start == self.end or self.start == "24:00":
            raise ValueError("allowed_hours: start must differ from end and be before 24:00")
        return self

    def allows(self, at: datetime) -> bool:
        """Whether ``at`` falls in the hours; a span past midnight belongs to its start day."""
        local = at.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        start, end = _minutes(self.start), _minutes(self.end)
        today = DAYS[local.weekday()] in self.days
        if start < end:
            return today and start <= minute < end
        yesterday = DAYS[(local.weekday() - 1) % 7] in self.days
        return (today and minute >= start) or (yesterday and minute < end)

    def describe(self) -> str:
        days = ",".join(self.days) if self.days != DAYS else "every day"
        return f"{days} {self.start}-{self.end} {self.timezone}"


class TripwireSpec(_Strict):
    """One tripwire as written in a policy file (the file's upstream only)."""

    id: str = Field(min_length=1)
    kind: Kind
    limit: float | None = Field(default=None, ge=0)
    window: float = Field(default=60, gt=0)
    per: Per = "agent"
    scope: Per | None = None  # what a freeze (or hold) covers; default: same as per
    agents: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    action: Literal["freeze", "hold"] = "freeze"
    field: str | None = Field(default=None, min_length=1)  # kind: sum
    allowed_hours: AllowedHours | None = None  # kind: hours
    min_calls: int | None = Field(default=None, ge=1)  # kind: error_rate (default 10)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"tripwire id {value!r} may use letters, digits and _ . : - only")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        return method_list(value, WRITE_METHODS, "{method} is not a write method ({allowed})")

    @model_validator(mode="after")
    def _fits_kind(self) -> TripwireSpec:
        needs = {"sum": "field", "hours": "allowed_hours"}
        for kind, key in needs.items():
            if (self.kind == kind) != (getattr(self, key) is not None):
                raise ValueError(f"{key} is for kind {kind}" if self.kind != kind
                                 else f"kind {kind} needs {key}")
        if self.min_calls is not None and self.kind != "error_rate":
            raise ValueError("min_calls is for kind error_rate")
        if self.kind == "hours":
            if self.limit is not None:
                raise ValueError("kind hours takes allowed_hours, not limit")
        elif self.limit is None:
            raise ValueError(f"kind {self.kind} needs a limit")
        if self.kind == "error_rate" and self.limit is not None and self.limit >= 1:
            raise ValueError("an error_rate limit is a ratio: 0 <= limit < 1")
        if self.kind == "deletes" and self.methods is not None:
            raise ValueError("kind deletes counts DELETE calls; use kind writes with methods")
        return self

    @property
    def freeze_scope(self) -> FreezeScope:
        return FreezeScope(self.scope or self.per)


class SettingsTripwire(TripwireSpec):
    """A tripwire of the settings file: every upstream, or those named."""

    upstreams: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Tripwire:
    """A spec and where it applies. ``owner`` is the policy file's upstream (None: settings)."""

    spec: TripwireSpec
    owner: str | None
    upstreams: frozenset[str] | None

    @property
    def key(self) -> tuple[str, str]:
        return self.owner or "", self.spec.id

    def applies(self, upstream: str, agent: str, method: str) -> bool:
        spec = self.spec
        return (is_mutating(method)
                and (self.upstreams is None or upstream in self.upstreams)
                and (spec.agents is None or agent in spec.agents)
                and (spec.methods is None or method in spec.methods)
                and (spec.kind != "deletes" or method == "DELETE"))

    def counted_by(self, upstream: str, agent: str) -> str:
        return {"agent": agent, "upstream": upstream, "global": ""}[self.spec.per]

    def target(self, upstream: str, agent: str) -> str | None:
        return {"agent": agent, "upstream": upstream, "global": None}[self.spec.freeze_scope.value]


def compile_tripwires(settings: Iterable[SettingsTripwire],
                      files: Mapping[str, Iterable[TripwireSpec]]) -> list[Tripwire]:
    """The settings file's tripwires, then each policy file's (``files``: upstream -> specs)."""
    out = [Tripwire(s, None, frozenset(s.upstreams) if s.upstreams is not None else None)
           for s in settings]
    for upstream, specs in files.items():
        out.extend(Tripwire(spec, upstream, frozenset([upstream])) for spec in specs)
    return out


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


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)

