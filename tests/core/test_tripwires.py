"""Tripwires: each kind's limit, sliding windows, keys, filters and what a trip covers.

Time is passed in: ``at(s)`` is ``s`` seconds after a Wednesday noon (UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.core.model import FreezeScope
from gateway.core.policy.loader import load_policy_set, parse_file
from gateway.core.tripwire_spec import SettingsTripwire, TripwireSpec, compile_tripwires
from gateway.core.tripwires import Trip, TripwireState, number_at

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a Wednesday


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def state_of(*specs: dict[str, Any], settings: tuple[dict[str, Any], ...] = ()) -> TripwireState:
    return TripwireState(compile_tripwires(
        [SettingsTripwire.model_validate(s) for s in settings],
        {"crm": [TripwireSpec.model_validate(s) for s in specs]} if specs else {}))


Call = tuple[float, str, str, Any] | tuple[float, str, str, Any, str]  # t, agent, method, body[, up]


def run(state: TripwireState, calls: list[Call]) -> list[int]:
    """The indexes of the calls that tripped."""
    tripped = []
    for i, call in enumerate(calls):
        t, agent, method, body, *rest = call
        if state.check_write(rest[0] if rest else "crm", agent, method, body, at(t)) is not None:
            tripped.append(i)
    return tripped


def writes(*times: float, agent: str = "bot", method: str = "PATCH") -> list[Call]:
    return [(t, agent, method, None) for t in times]


WRITES = {"id": "bulk", "kind": "writes", "limit": 2, "window": 10}


@pytest.mark.parametrize(("spec", "calls", "tripped"), [
    # the write that would exceed the limit trips; limit 2 lets two through
    (WRITES, writes(0, 1, 2), [2]),
    ({**WRITES, "limit": 0}, writes(0), [0]),
    # the window slides: the write at 0 is gone at 10 (window (now-10, now])
    (WRITES, writes(0, 5, 9, 10, 14, 15.5), [2, 4]),
    # a tripped write is not counted: at 11 only the write at 5 is in the window
    (WRITES, writes(0, 5, 6, 11), [2]),
    # per agent (default): each agent has its own count
    (WRITES, writes(0, 1) + writes(2, 3, agent="other") + writes(4), [4]),
    ({**WRITES, "per": "upstream"}, writes(0, 1) + writes(2, agent="other"), [2]),
    # reads never count, nor are they checked
    (WRITES, writes(0, 1, 2, 3, method="GET") + writes(4, 5), []),
    # filters: only the named agents' and methods' calls count
    ({**WRITES, "agents": ["bot"]}, writes(0, 1, 2, agent="other") + writes(3), []),
    ({**WRITES, "methods": ["post", "PUT"]}, writes(0, 1, 2) + writes(3, 4, 5, method="POST"), [5]),
    # deletes count DELETE calls only
    ({**WRITES, "kind": "deletes"}, writes(0, 1, 2, 3) + writes(4, 5, 6, method="DELETE"), [6]),
])
def test_counting_kinds(spec: dict[str, Any], calls: list[Call], tripped: list[int]) -> None:
    assert run(state_of(spec), calls) == tripped


def test_settings_tripwires_count_per_upstream_or_together_and_can_name_upstreams() -> None:
    spec = {**WRITES, "per": "upstream"}
    calls: list[Call] = [(0, "bot", "POST", None, "crm"), (1, "bot", "POST", None, "crm"),
                         (2, "bot", "POST", None, "billing"), (3, "bot", "POST", None, "crm")]
    assert run(state_of(settings=(spec,)), calls) == [3]
    assert run(state_of(settings=({**spec, "per": "global"},)), calls) == [2, 3]
    assert run(state_of(settings=({**spec, "upstreams": ["billing"]},)), calls) == []
    # a policy file's tripwire watches its own upstream only
    assert run(state_of({**spec, "per": "global"}), calls) == [3]


def test_reason_and_scope_of_a_trip() -> None:
    state = state_of({"id": "bulk-updates", "kind": "writes", "limit": 10})
    for i in range(10):
        assert state.check_write("crm", "bot", "PATCH", None, at(i)) is None
    trip = state.check_write("crm", "bot", "PATCH", None, at(10))
    assert trip == Trip("bulk-updates", "writes", "freeze", FreezeScope.AGENT, "bot",
                        "tripwire bulk-updates: 11 writes in 60s by agent bot (limit 10)",
                        "crm", "bot", "crm")
    freeze = trip.freeze(at(10))
    assert (freeze.scope, freeze.target, freeze.by, freeze.reason) == (
        FreezeScope.AGENT, "bot", "tripwire:bulk-updates", trip.reason)
    assert trip.detail()["defined_in"] == "crm" and trip.detail()["scope"] == "agent"


@pytest.mark.parametrize(("per", "scope", "expected"), [
    ("agent", None, (FreezeScope.AGENT, "bot")),
    ("upstream", None, (FreezeScope.UPSTREAM, "crm")),
    ("global", None, (FreezeScope.GLOBAL, None)),
    ("agent", "global", (FreezeScope.GLOBAL, None)),
    ("global", "agent", (FreezeScope.AGENT, "bot")),
    ("agent", "upstream", (FreezeScope.UPSTREAM, "crm")),
])
def test_scope_defaults_to_per(per: str, scope: str | None,
                               expected: tuple[FreezeScope, str | None]) -> None:
    state = state_of({"id": "w", "kind": "writes", "limit": 0, "per": per, "scope": scope})
    trip = state.check_write("crm", "bot", "POST", None, at(0))
    assert trip is not None and (trip.scope, trip.target) == expected


SUM = {"id": "refunds", "kind": "sum", "field": "amount", "limit": 1000, "window": 3600}


@pytest.mark.parametrize(("spec", "bodies", "tripped"), [
    (SUM, [{"amount": 400}, {"amount": 600}, {"amount": 1}], [2]),
    (SUM, [{"amount": 1001}], [0]),
    # not a number, missing, a boolean, null, negative or zero: ignored, never counted
    (SUM, [{"amount": "abc"}, {}, {"amount": True}, {"amount": None}, {"amount": -5000},
           {"amount": 0}, None, [1, 2], "text", {"amount": 999.5}], []),
    # numeric strings count (form-encoded bodies carry only strings)
    (SUM, [{"amount": "700"}, {"amount": "300.5"}], [1]),
    ({**SUM, "field": "data.amount"}, [{"data": {"amount": 900}}, {"amount": 900},
                                       {"data": {"amount": 200}}], [2]),
    ({**SUM, "field": "items.1.amount"}, [{"items": [{"amount": 5000}, {"amount": 1001}]}], [0]),
])
def test_sum(spec: dict[str, Any], bodies: list[Any], tripped: list[int]) -> None:
    assert run(state_of(spec), [(i, "bot", "POST", b) for i, b in enumerate(bodies)]) == tripped


def test_sum_window_slides_and_reason_names_the_field() -> None:
    state = state_of({**SUM, "window": 60})
    assert state.check_write("crm", "bot", "POST", {"amount": 900}, at(0)) is None
    trip = state.check_write("crm", "bot", "POST", {"amount": 200}, at(30))
    assert trip is not None
    assert trip.reason == "tripwire refunds: amount totals 1100 in 60s by agent bot (limit 1000)"
    assert state.check_write("crm", "bot", "POST", {"amount": 200}, at(60)) is None


@pytest.mark.parametrize(("number", "body", "path"), [
    (12.5, {"data": {"amount": "12.5"}}, "data.amount"),
    (3.0, {"a": [1, 2, {"b": 3}]}, "a.2.b"),
    (None, {"a": [1]}, "a.5"),
    (None, {"a": {"b": 1}}, "a.b.c"),
    (None, {"amount": float("inf")}, "amount"),
    (None, {"amount": "nan"}, "amount"),
    (None, {"amount": False}, "amount"),
])
def test_number_at(number: float | None, body: Any, path: str) -> None:
    assert number_at(body, path) == number


PARIS = {"id": "office", "kind": "hours",
         "allowed_hours": {"start": "08:00", "end": "18:00", "days": ["mon-fri"],
                           "timezone": "Europe/Paris"}}
NIGHT = {"id": "night", "kind": "hours",
         "allowed_hours": {"start": "22:00", "end": "06:00", "days": ["fri"]}}


@pytest.mark.parametrize(("spec", "when", "trips"), [
    (PARIS, "2024-05-01T05:59:00Z", True),    # Wed 07:59 in Paris (summer time, UTC+2)
    (PARIS, "2024-05-01T06:00:00Z", False),   # 08:00
    (PARIS, "2024-05-01T15:59:59Z", False),   # 17:59:59
    (PARIS, "2024-05-01T16:00:00Z", True),    # 18:00: end is excluded
    (PARIS, "2024-01-10T07:00:00Z", False),   # Wed 08:00 in winter (UTC+1)
    (PARIS, "2024-01-10T06:30:00Z", True),    # 07:30
    (PARIS, "2024-05-04T10:00:00Z", True),    # Saturday
    (PARIS, "2024-05-05T23:30:00Z", True),    # Sunday in UTC, Monday 01:30 in Paris: too early
    (NIGHT, "2024-05-03T23:00:00Z", False),   # Fri 23:00
    (NIGHT, "2024-05-04T05:59:00Z", False),   # Sat 05:59: Friday's night
    (NIGHT, "2024-05-04T23:00:00Z", True),    # Sat 23:00
    (NIGHT, "2024-05-03T05:00:00Z", True),    # Fri 05:00: Thursday's night
])
def test_hours(spec: dict[str, Any], when: str, trips: bool) -> None:
    now = datetime.fromisoformat(when.replace("Z", "+00:00"))
    trip = state_of(spec).check_write("crm", "bot", "PUT", None, now)
    assert (trip is not None) is trips
    if trip is not None and spec is PARIS:
        assert "outside the allowed hours (mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris)" \
            in trip.reason


def outcomes(state: TripwireState, statuses: list[int | None], agent: str = "bot") -> list[int]:
    return [i for i, status in enumerate(statuses)
            if state.record_outcome("crm", agent, "POST", status, at(i)) is not None]


ERRORS = {"id": "errors", "kind": "error_rate", "limit": 0.5, "min_calls": 4, "per": "upstream"}


@pytest.mark.parametrize(("spec", "statuses", "tripped"), [
    # below min_calls nothing trips; 3 of 4 failed > 50%
    (ERRORS, [500, 503, 502, 200], [3]),
    # exactly at the limit does not trip; None (no answer) is an error, a 4xx is not
    (ERRORS, [500, None, 200, 404, 200, 200], []),
    (ERRORS, [None, None, 404, None], [3]),
    # a trip starts the window afresh: the old failures do not trip it again
    (ERRORS, [500, 500, 500, 500, 500, 500, 500, 500], [3, 7]),
    ({**ERRORS, "min_calls": None}, [500] * 9 + [200], [9]),  # min_calls defaults to 10
    ({**ERRORS, "methods": ["DELETE"]}, [500, 500, 500, 500], []),  # these were POSTs
])
def test_error_rate(spec: dict[str, Any], statuses: list[int | None], tripped: list[int]) -> None:
    assert outcomes(state_of(spec), statuses) == tripped


def test_error_rate_window_slides_and_reason() -> None:
    state = state_of({**ERRORS, "window": 10})
    for i, status in enumerate([500, 500, 500]):
        assert state.record_outcome("crm", "bot", "PUT", status, at(i)) is None
    assert state.record_outcome("crm", "bot", "PUT", 500, at(20)) is None  # the others are gone
    state = state_of(ERRORS)
    for i in range(3):
        state.record_outcome("crm", "bot", "PUT", 500, at(i))
    trip = state.record_outcome("crm", "other", "PUT", 200, at(3))
    assert trip is not None and (trip.scope, trip.target) == (FreezeScope.UPSTREAM, "crm")
    assert trip.reason == ("tripwire errors: 3 of 4 writes failed (75%) in 60s to upstream crm "
                           "(limit 50%)")
    assert state.check_write("crm", "bot", "PUT", None, at(4)) is None  # error_rate acts after


def test_hold_covers_the_scope_for_one_window() -> None:
    state = state_of({**WRITES, "action": "hold", "scope": "global"})
    assert run(state, writes(0, 1)) == []
    trip = state.check_write("crm", "bot", "PATCH", None, at(2))
    assert trip is not None and trip.action == "hold" and trip.fresh and trip.until == at(12)
    later = state.check_write("crm", "other", "PATCH", None, at(3))  # other agent, under its limit
    assert later is not None and not later.fresh and later.reason == trip.reason
    assert later.agent == "other"
    assert state.check_write("crm", "other", "GET", None, at(3)) is None
    assert state.check_write("crm", "other", "PATCH", None, at(12)) is None  # the hold lapsed


def test_error_rate_hold_holds_later_writes() -> None:
    state = state_of({**ERRORS, "action": "hold"})
    assert outcomes(state, [500, 500, 500, 500]) == [3]
    trip = state.check_write("crm", "bot", "POST", None, at(5))
    assert trip is not None and trip.action == "hold" and not trip.fresh


def test_a_freeze_wins_over_a_hold_and_nothing_is_counted_when_one_trips() -> None:
    state = state_of({"id": "a", "kind": "writes", "limit": 1, "action": "hold"},
                     {"id": "b", "kind": "writes", "limit": 2})
    assert run(state, writes(0)) == []
    trip = state.check_write("crm", "bot", "PATCH", None, at(1))
    assert trip is not None and trip.tripwire == "a" and trip.action == "hold"
    state = state_of({"id": "a", "kind": "writes", "limit": 1, "action": "hold"},
                     {"id": "b", "kind": "writes", "limit": 1})
    assert run(state, writes(0)) == []
    trip = state.check_write("crm", "bot", "PATCH", None, at(1))
    assert trip is not None and trip.tripwire == "b" and trip.action == "freeze"


def test_configure_keeps_the_windows_of_unchanged_tripwires() -> None:
    kept, changed = {**WRITES, "id": "kept"}, {**WRITES, "id": "changed"}
    state = state_of(kept, changed)
    assert run(state, writes(0, 1)) == []
    state.configure(compile_tripwires([], {"crm": [TripwireSpec.model_validate(kept),
                                                   TripwireSpec.model_validate({**changed,
                                                                                "limit": 3})]}))
    trip = state.check_write("crm", "bot", "PATCH", None, at(2))
    assert trip is not None and trip.tripwire == "kept"
    state.configure([])
    assert state.check_write("crm", "bot", "PATCH", None, at(3)) is None


def test_memory_is_bounded() -> None:
    state = state_of({**WRITES, "limit": 10**9, "window": 100})
    for i in range(30_000):  # 300 seconds of 100 writes a second
        state.check_write("crm", f"agent-{i % 3}", "POST", None, at(i / 100))
    windows = state._windows
    assert len(windows) == 3
    for window in windows.values():
        assert len(window.buckets) <= 1000
        assert 3333 <= window.count <= 3334 + 4  # the last 100 s, up to one bucket more
    state.check_write("crm", "late", "GET", None, at(1000))  # any later call sweeps
    assert state._windows == {}


@pytest.mark.parametrize(("spec", "message"), [
    ({"id": "x", "kind": "writes"}, "kind writes needs a limit"),
    ({"id": "x", "kind": "sum", "limit": 5}, "kind sum needs field"),
    ({"id": "x", "kind": "writes", "limit": 5, "field": "amount"}, "field is for kind sum"),
    ({"id": "x", "kind": "hours"}, "kind hours needs allowed_hours"),
    ({**PARIS, "limit": 3}, "kind hours takes allowed_hours, not limit"),
    ({"id": "x", "kind": "writes", "limit": 5, "min_calls": 3}, "min_calls is for kind error_rate"),
    ({"id": "x", "kind": "error_rate", "limit": 1.5}, "0 <= limit < 1"),
    ({"id": "x", "kind": "deletes", "limit": 1, "methods": ["DELETE"]}, "use kind writes"),
    ({"id": "x", "kind": "writes", "limit": 1, "methods": ["GET"]}, "'GET' is not a write method"),
    ({"id": "x", "kind": "writes", "limit": -1}, "greater than or equal to 0"),
    ({"id": "x", "kind": "writes", "limit": 1, "window": 0}, "greater than 0"),
    ({"id": "x", "kind": "writes", "limit": 1, "per": "team"}, "'agent', 'upstream' or 'global'"),
    ({"id": "x", "kind": "writes", "limit": 1, "action": "deny"}, "'freeze' or 'hold'"),
    ({"id": "x", "kind": "counts", "limit": 1}, "'writes', 'deletes'"),
    ({"id": "x y", "kind": "writes", "limit": 1}, "letters, digits"),
    ({"id": "x", "kind": "writes", "limit": 1, "upstreams": ["crm"]}, "Extra inputs"),
    ({**PARIS, "allowed_hours": {"start": "8am", "end": "18:00"}}, "not a time of day"),
    ({**PARIS, "allowed_hours": {"start": "08:00", "end": "24:30"}}, "not a time of day"),
    ({**PARIS, "allowed_hours": {"start": "08:00", "end": "08:00"}}, "start must differ"),
    ({**PARIS, "allowed_hours": {"start": "08:00", "end": "18:00", "days": ["monday"]}},
     "unknown day 'monday'"),
    ({**PARIS, "allowed_hours": {"start": "08:00", "end": "18:00", "timezone": "Mars/Base"}},
     "unknown timezone 'Mars/Base'"),
])
def test_invalid_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TripwireSpec.model_validate(spec)


def test_days_and_yaml_sexagesimal_times() -> None:
    spec = TripwireSpec.model_validate({**PARIS, "allowed_hours": {
        "start": 480, "end": 1080, "days": "sat-mon"}})  # YAML 1.1 reads 18:00 as 1080
    assert spec.allowed_hours is not None
    assert (spec.allowed_hours.start, spec.allowed_hours.end) == ("08:00", "18:00")
    assert spec.allowed_hours.days == ("mon", "sat", "sun")


POLICY = """\
version: 1
upstream: crm
base_url: http://127.0.0.1:3000
tripwires:
  - id: bulk
    kind: writes
    limit: 10
  - id: office
    kind: hours
    action: hold
    allowed_hours: {start: 08:00, end: 18:00, days: [mon-fri], timezone: Europe/Paris}
"""


def test_a_policy_file_carries_tripwires() -> None:
    policy_set, problems = load_policy_set({"crm.yaml": POLICY}, env={})
    assert problems == [] and policy_set is not None
    bulk, office = policy_set.upstreams["crm"].spec.tripwires
    assert bulk.limit == 10 and office.allowed_hours is not None
    assert office.allowed_hours.end == "18:00"  # unquoted in YAML, still a time


@pytest.mark.parametrize(("text", "problem"), [
    (POLICY + "    upstreams: [crm]\n",
     "crm.yaml:12: tripwire 'office': unknown key 'upstreams' in tripwires.1"),
    (POLICY + "  - id: bulk\n    kind: deletes\n    limit: 1\n",
     "crm.yaml:12: duplicate tripwire id 'bulk' (first at line 5)"),
    (POLICY.replace("limit: 10", "limit: ten"),
     "crm.yaml:7: tripwire 'bulk': tripwires.0.limit: Input should be a valid number"),
    (POLICY.replace("action: hold", "action: block"),
     "crm.yaml:10: tripwire 'office': tripwires.1.action: Input should be 'freeze' or 'hold'"),
    (POLICY.replace("Europe/Paris", "Europe/Atlantis"),
     "crm.yaml:11: tripwire 'office': tripwires.1.allowed_hours.timezone: unknown timezone"),
    (POLICY.replace("    limit: 10\n", ""),
     "crm.yaml:5: tripwire 'bulk': tripwires.0: kind writes needs a limit"),
])
def test_policy_file_problems_name_the_line(text: str, problem: str) -> None:
    model, _, problems = parse_file("crm.yaml", text)
    assert model is None
    assert len(problems) == 1 and problems[0].startswith(problem), problems


