"""The SQLite store's journal key file, when several processes start at once
(``gateway serve --workers N``): no process may read a key file that exists but is
not written yet (a worker once failed to start on "journal_key ... got 0 bytes")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.core.seal import decode_key
from gateway.store import seal_key


def test_the_key_file_appears_only_once_written_whole(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.db.key"
    made = seal_key.new_key_text

    def key_while_path_is_absent() -> str:
        assert not path.exists(), "the key file is visible before its key is written"
        return made()

    monkeypatch.setattr(seal_key, "new_key_text", key_while_path_is_absent)
    key = seal_key.load_or_create_key_file(path)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.db.key"]  # no temporary left


def test_a_process_that_lost_the_race_reads_the_winners_key(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.db.key"
    winner = seal_key.new_key_text()
    made = seal_key.new_key_text

    def another_process_links_first() -> str:  # between our check and our link
        path.write_text(winner + "\n")
        return made()

    monkeypatch.setattr(seal_key, "new_key_text", another_process_links_first)
    assert seal_key.load_or_create_key_file(path) == decode_key(winner)
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.db.key"]
