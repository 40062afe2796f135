"""core.audit_export: an export checked offline names the first thing that does not hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.audit import link
from gateway.core.audit_export import verify_export
from gateway.core.merkle import Tree, record_leaf
from gateway.core.model import AuditRecord
from gateway.core.note import Checkpoint, NoteSigner, NoteVerifier

SIGNER = NoteSigner("test.example/audit", bytes(range(32)))
VERIFIER = NoteVerifier.parse(SIGNER.verifier_key())
T0 = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _records(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for i in range(n):
        out.append(link(out[-1] if out else None, T0 + timedelta(seconds=i), "ops",
                        "call.allow", {"i": i, "name": "Zoë"}))
    return out


def _note(records: list[AuditRecord], size: int) -> str:
    tree = Tree(record_leaf(r.hash) for r in records[:size])
    return SIGNER.sign(Checkpoint("test.example/audit", size, tree.root()).text())


def _lines(records: list[AuditRecord], **checkpoints: str) -> list[str]:
    lines = []
    for r in records:
        lines.append(json.dumps({**r.to_json(), "leaf_hash": record_leaf(r.hash).hex()}))
        if f"at{r.seq}" in checkpoints:
            lines.append(json.dumps({"checkpoint": {"size": r.seq,
                                                    "note": checkpoints[f"at{r.seq}"]}}))
    return lines


def test_an_intact_export_verifies_with_its_checkpoints() -> None:
    records = _records(10)
    check = verify_export(_lines(records, at4=_note(records, 4), at10=_note(records, 10)),
                          [_note(records, 7)], VERIFIER)
    assert check.ok, check.problem
    assert (check.records, check.checkpoints, check.signed, check.largest) == (10, 3, 3, 10)
    assert "10 records" in check.summary()


def test_a_deleted_tail_is_a_truncation_below_the_checkpoint() -> None:
    records = _records(10)
    check = verify_export(_lines(records[:8]), [_note(records, 10)], VERIFIER)
    assert not check.ok
    assert check.problem == "truncated: checkpoint of size 10, export holds 8"
    assert check.first_bad_seq == 9


def test_an_edited_record_is_named() -> None:
    records = _records(6)
    lines = _lines(records)
    edited = json.loads(lines[3])
    edited["detail"]["i"] = 99
    lines[3] = json.dumps(edited)
    check = verify_export(lines, [_note(records, 6)], VERIFIER)
    assert (check.ok, check.first_bad_seq) == (False, 4)
    assert check.problem is not None and check.problem.startswith("seq 4:")


def test_two_swapped_records_are_named() -> None:
    records = _records(6)
    lines = _lines(records)
    lines[2], lines[3] = lines[3], lines[2]
    check = verify_export(lines, [], None)
    assert (check.ok, check.first_bad_seq) == (False, 3)


def test_a_rewritten_chain_does_not_match_the_signed_roots() -> None:
    records = _records(8)
    notes = [_note(records, 3), _note(records, 8)]
    forged = records[:5]
    for i in range(5, 8):  # a consistent chain with different records after seq 5
        forged.append(link(forged[-1], T0, "ops", "call.allow", {"forged": i}))
    check = verify_export(_lines(forged), notes, VERIFIER)
    assert not check.ok
    assert check.first_bad_seq == 4  # somewhere after the last checkpoint that still matches
    assert "checkpoint of size 8" in (check.problem or "")


def test_a_checkpoint_with_a_bad_signature_fails() -> None:
    records = _records(3)
    other = NoteSigner("test.example/audit", bytes(32))
    forged = other.sign(Checkpoint("test.example/audit", 3, Tree(
        record_leaf(r.hash) for r in records).root()).text())
    check = verify_export(_lines(records), [forged], VERIFIER)
    assert not check.ok and "does not verify" in (check.problem or "")
    tampered = _note(records, 3).replace("\n3\n", "\n2\n")
    assert not verify_export(_lines(records), [tampered], VERIFIER).ok


@pytest.mark.parametrize("lines, problem", [
    (["{not json"], "line 1 is not JSON"),
    (["[1]"], "line 1 is not a JSON object"),
])
def test_garbage_is_named_by_line(lines: list[str], problem: str) -> None:
    assert verify_export(lines).problem == problem


def test_a_key_without_any_checkpoint_proves_nothing() -> None:
    check = verify_export(_lines(_records(2)), [], VERIFIER)
    assert not check.ok and "no checkpoint signed by" in (check.problem or "")


def test_a_witness_key_requires_its_valid_cosignature() -> None:
    from gateway.core.note import CosignatureVerifier
    from tests.e2e.witness import Witness

    records = _records(4)
    witness = Witness(SIGNER.verifier_key())
    note = _note(records, 4)
    status, _, line = witness.add_checkpoint(f"old 0\n\n{note}")
    assert status == 200
    cosigned = note + line
    key = CosignatureVerifier.parse(witness.vkey())
    check = verify_export(_lines(records), [cosigned], VERIFIER, [key])
    assert check.ok and check.cosigned == {key.name: 4}
    assert "cosigned by witness.test/w1 up to size 4" in check.summary()
    assert "no checkpoint is cosigned" in (verify_export(_lines(records), [note], VERIFIER,
                                                         [key]).problem or "")
    forged = cosigned[:-6] + ("A" if cosigned[-6] != "A" else "B") + cosigned[-5:]
    broken = verify_export(_lines(records), [forged], VERIFIER, [key])
    assert not broken.ok and "cosignature of witness.test/w1" in (broken.problem or "")
