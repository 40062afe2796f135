"""Suspected in issue 16: an engage that does not wait for a process missing from the
member list.

A process is off the list while its push channel is down: its PostgreSQL listening
session was lost (a database restart, a network blip), or its SQLite bus socket was
removed (a tmp cleaner); its heartbeat joins it again within ``lease / 2``. A covered
write it has on its way meanwhile must still be cut off within ``engage_wait`` of the
engage, as the contract says of every process on the store, and the engage must not
return before that: it is not told, so it must learn of the freeze from the store.

Two real ``gateway serve`` processes on one store (SQLite and PostgreSQL) in front of
a recorder upstream that never answers ``/hang``: the first has a write hanging there,
it is taken off the member list, the second engages.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.procs import Proc, start_gateways
from tests.e2e.recorder import Recorder
from tests.e2e.test_killswitch_processes import APPROVER, ENGAGE_WAIT, Hanging, config, gateways, upstream  # noqa: F401 - fixtures
from tests.faults.procs_support import query
from tests.harness import poll


def off_the_member_list(store_url: str, tmp_path: Path, proc: Proc) -> None:
    """Take ``proc``'s bus listener away, as a lost session or a tmp cleaner would."""
    prefix = f"{proc.proc.pid}-"
    if store_url.startswith("sqlite"):
        database = Path(store_url.split("///", 1)[1])
        directory = Path(database.with_name(f".{database.name}.bus").readlink())
        [socket] = [p for p in directory.glob("*.sock") if p.name.startswith(prefix)]
        socket.unlink()
        return
    [(terminated,)] = query(
        store_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name LIKE $1", f"gateway-bus {prefix}%")
    assert terminated


def test_a_process_off_the_member_list_still_cuts_off_its_write_before_engage_returns(
        store_url: str, tmp_path: Path, config: Path,  # noqa: F811
        upstream: Recorder, gateways: list[Proc]) -> None:  # noqa: F811
    gateways += start_gateways(config, 2)
    (writing, _), (_, engaging) = gateways[0].urls, gateways[1].urls
    hanging = Hanging(writing, upstream)
    off_the_member_list(store_url, tmp_path, gateways[0])
    began = time.monotonic()
    engaged = httpx.post(f"{engaging}/v1/killswitch/engage", json={"reason": "hang"},
                         headers=APPROVER, timeout=ENGAGE_WAIT + 1)
    returned = time.monotonic() - began
    assert engaged.status_code == 200, engaged.text
    [write] = engaged.json()["in_flight"]
    assert (write["path"], write["state"]) == ("/hang/1", "unknown")
    assert write["process"].startswith(f"{gateways[0].proc.pid}-")
    # When the engage returned, the write was no longer on its way: the upstream sees
    # its connection closed at once (not at the rule's timeout, a minute later).
    poll(upstream.cut_off.is_set, f"the write cut off (the engage returned after "
         f"{returned:.2f} s)", timeout=1.0)
    # ... and that process told its agent the outcome is unknown, within engage_wait.
    poll(lambda: hanging.response is not None, "the agent's answer", timeout=ENGAGE_WAIT + 2)
    answer = hanging.answer()
    assert answer.status_code == 423, answer.text
    assert answer.json()["error"]["outcome"] == "unknown"
