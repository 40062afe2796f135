"""What a process keeps in mind of the writes agents left (``gateway.services.resends``):
hints from the bus are bounded, whatever is sent on it."""

from __future__ import annotations

import pytest

from gateway.services import resends
from gateway.services.resends import WriteResends


def test_a_flood_of_hints_keeps_the_newest_within_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resends, "KNOWN_LIMIT", 100)
    process = WriteResends(None)
    for n in range(1000):
        process.heard({"type": "left", "key": f"{n:064x}"})
    process.heard({"type": "left", "key": "short"})  # not a key: ignored
    process.heard({"type": "engage", "key": f"{1:064x}"})  # not a mark: ignored
    known = process._known
    assert len(known) == 100 and list(known)[-1] == f"{999:064x}"
    assert f"{899:064x}" not in known and f"{900:064x}" in known
