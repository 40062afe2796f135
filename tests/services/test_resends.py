"""What a process keeps in mind of the writes agents left (``gateway.services.resends``):
hints from the bus are bounded, whatever is sent on it; a sibling worker's death marks its
writes before the next write is looked for."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.errors import JournalUnavailable
from gateway.services import resends
from gateway.services.resends import WriteResends
from gateway.services.siblings import Siblings


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


class _Marks:
    """The store's half, as far as a sibling's death goes."""

    def __init__(self) -> None:
        self.stranded: list[str] = []
        self.looked_for: list[str] = []
        self.down = False

    async def strand_writes(self, process: str, at: object) -> list[str]:
        if self.down:
            raise ConnectionError("the store is down")
        self.stranded.append(process)
        return [f"{len(self.stranded):064x}"]

    async def rejoin_write(self, key: str, agent: str, since: object) -> None:
        self.looked_for.append(key)


async def test_a_sibling_death_marks_its_writes_before_the_next_write_is_looked_for() -> None:
    siblings = Siblings(2)
    try:
        siblings.as_worker(0)
        marks = _Marks()
        process = WriteResends(marks, siblings=siblings)  # type: ignore[arg-type]
        call = SimpleNamespace(agent="support-bot", method="POST", raw_path="/items")
        assert await process.rejoin(call, f"{1:064x}") is None  # type: ignore[arg-type]
        assert marks.stranded == [] and marks.looked_for == []  # no death: nothing read
        siblings.as_worker(1)
        siblings.named("4242-deadbeef")
        siblings.died(1)
        siblings.as_worker(0)
        marks.down = True  # fail closed: this write may be a resend of the dead one's
        with pytest.raises(JournalUnavailable):
            await process.rejoin(call, f"{1:064x}")  # type: ignore[arg-type]
        marks.down = False
        assert await process.rejoin(call, f"{1:064x}") is None  # type: ignore[arg-type]
        assert marks.stranded == ["4242-deadbeef"] and marks.looked_for == [f"{1:064x}"]
        assert await process.rejoin(call, f"{2:064x}") is None  # type: ignore[arg-type]
        assert marks.stranded == ["4242-deadbeef"]  # once per death
        assert marks.looked_for == [f"{1:064x}"]  # forgotten: none was free
    finally:
        siblings.close()
