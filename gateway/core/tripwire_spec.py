"""Tripwires as written: a policy file's or the settings file's specs, checked at load,
and where each one applies (``Tripwire``). What they count and when they trip is
``gateway.core.tripwires``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.core.model import FreezeScope, is_mutating, method_list

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")  # it ends up in metric labels
_HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")

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


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)

