"""Small value helpers: mutating methods, ids, times, the undo's JSON form."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.core.model import Undo, is_mutating, iso, new_id, parse_iso


@pytest.mark.parametrize(("method", "mutating"), [
    ("GET", False), ("HEAD", False), ("OPTIONS", False), ("get", False),
    ("POST", True), ("PUT", True), ("PATCH", True), ("DELETE", True), ("PROPFIND", True),
    ("TRACE", True),
])
def test_is_mutating(method: str, mutating: bool) -> None:
    assert is_mutating(method) is mutating


def test_new_id_is_32_hex_and_sorts_by_time() -> None:
    ids = [new_id() for _ in range(50)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 50
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)


AT = datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(("at", "text"), [
    (AT, "2024-05-01T12:00:00.000005Z"),
    (AT.astimezone(timezone(timedelta(hours=2))), "2024-05-01T12:00:00.000005Z"),
])
def test_iso(at: datetime, text: str) -> None:
    assert iso(at) == text


def test_iso_is_fixed_width_whole_seconds_included() -> None:
    assert iso(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)) == "2024-05-01T12:00:00.000000Z"
    rng = random.Random(3)
    for _ in range(2000):
        at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.getrandbits(45))
        assert iso(at) == at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T12:00:00.000005Z", AT),
    ("2024-05-01T14:00:00.000005+02:00", AT),
    ("2024-05-01T12:00:00.000005", AT),  # naive: UTC
])
def test_parse_iso(text: str, expected: datetime) -> None:
    parsed = parse_iso(text)
    assert parsed == expected
    assert parsed.tzinfo == UTC
    assert iso(parsed) == iso(expected)


@pytest.mark.parametrize("undo", [
    Undo("PUT", "/c/1", {"name": "Ada"}),
    Undo("POST", "/c", {"a": "1"}, "application/x-www-form-urlencoded"),
    Undo("DELETE", "/c/1"),
])
def test_undo_json_round_trip(undo: Undo) -> None:
    assert Undo.from_json(undo.to_json()) == undo


def test_undo_from_json_defaults_to_json() -> None:
    assert Undo.from_json({"method": "DELETE", "path": "/c/1", "content_type": None}) \
        == Undo("DELETE", "/c/1", None, "application/json")


def test_ids_are_unique_and_a_forked_child_does_not_repeat_its_parent() -> None:
    import os

    from gateway.core.model import new_id

    ids = {new_id() for _ in range(5000)}  # more than one draw of entropy
    assert len(ids) == 5000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's undrawn entropy must not be reused
        os.write(write, new_id()[12:].encode())
        os._exit(0)
    os.close(write)
    parent = new_id()[12:]
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 20 and child != parent
