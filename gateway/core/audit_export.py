"""Checking an audit export offline: the chain, the Merkle tree and the checkpoints.

An export (``GET /v1/audit/export?format=jsonl``) is one JSON object a line:
records (``seq``, ``at``, ``actor``, ``action``, ``detail``, ``prev_hash``,
``hash``, ``leaf_hash``), oldest first, and after the record that completes
a tree of N leaves, ``{"checkpoint": {"size": N, "root", "note"}}`` for each
signed checkpoint of that size. ``verify_export`` recomputes every chain
hash and leaf, builds the tree, and holds it against every checkpoint, from
the export and handed in separately (as anchored in a file, by a witness):

- an edited record, or two swapped, break the chain: the first bad ``seq``;
- a deleted tail leaves a checkpoint larger than the export: "checkpoint of
  size N, export holds M";
- a rewritten chain (every later hash recomputed) no longer matches the roots
  that were signed: named by the range between the last checkpoint that still
  matches and the first that does not.

With a verifier key, every checkpoint must carry a valid signature of it; with
witness keys, each witness must have cosigned at least one of them (and every
cosignature of theirs must verify).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.audit import GENESIS, chain_hash
from gateway.core.merkle import Tree, record_leaf
from gateway.core.model import parse_iso
from gateway.core.note import Checkpoint, CosignatureVerifier, NoteVerifier, split_note
from gateway.errors import NoteError


@dataclass(slots=True)
class ExportCheck:
    ok: bool = True
    records: int = 0
    head: str = GENESIS
    checkpoints: int = 0  # distinct tree sizes held against the records
    signed: int = 0  # of those, signed by the key given
    largest: int = 0  # the largest checkpoint size that matched
    problem: str | None = None
    first_bad_seq: int | None = None
    cosigned: dict[str, int] = field(default_factory=dict)  # witness -> largest size

    def fail(self, problem: str, seq: int | None) -> ExportCheck:
        self.ok, self.problem, self.first_bad_seq = False, problem, seq
        return self

    def summary(self) -> str:
        if not self.ok:
            return f"audit export BROKEN: {self.problem}"
        signed = f", {self.signed} signed by the key" if self.signed else ", signatures not checked"
        witnessed = "".join(f"; cosigned by {name} up to size {size}"
                            for name, size in sorted(self.cosigned.items()))
        return (f"audit export ok: {self.records} records, head {self.head}; "
                f"{self.checkpoints} checkpoints match (largest size {self.largest}){signed}"
                f"{witnessed}")


def _record_problem(line: dict[str, Any], expected: int, prev: str) -> str | None:
    seq = line.get("seq")
    if seq != expected:
        return f"expected seq {expected}, found seq {seq}"
    try:
        recomputed = chain_hash(prev, seq, parse_iso(line["at"]), line["actor"],
                                line["action"], line["detail"])
    except (KeyError, TypeError, ValueError):
        return "the record is incomplete"
    if line.get("prev_hash") != prev:
        return "prev_hash does not name the record before it"
    if line.get("hash") != recomputed:
        return "hash does not match the record's fields (edited)"
    if "leaf_hash" in line and line["leaf_hash"] != record_leaf(recomputed).hex():
        return "leaf_hash does not match the record's hash"
    return None


def verify_export(lines: Iterable[str], notes: Iterable[str] = (),
                  verifier: NoteVerifier | None = None,
                  witnesses: Sequence[CosignatureVerifier] = ()) -> ExportCheck:
    """Walk the export; the result names the first thing that does not hold."""
    check, tree = ExportCheck(), Tree()
    notes = list(notes)
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return check.fail(f"line {number} is not JSON", None)
        if not isinstance(line, dict):
            return check.fail(f"line {number} is not a JSON object", None)
        if isinstance(line.get("checkpoint"), dict):
            notes.append(str(line["checkpoint"].get("note", "")))
            continue
        problem = _record_problem(line, tree.size + 1, check.head)
        if problem is not None:
            return check.fail(f"seq {tree.size + 1}: {problem}", tree.size + 1)
        tree.append(record_leaf(line["hash"]))
        check.head, check.records = line["hash"], tree.size
    return _against_checkpoints(check, tree, notes, verifier, witnesses)


def _against_checkpoints(check: ExportCheck, tree: Tree, notes: list[str],
                         verifier: NoteVerifier | None,
                         witnesses: Sequence[CosignatureVerifier]) -> ExportCheck:
    points: dict[int, Checkpoint] = {}
    for note in notes:
        try:
            point = (verifier.open(note) if verifier is not None
                     else Checkpoint.parse(split_note(note)[0]))
            for witness in witnesses:
                if witness.cosigned(note) is not None:
                    check.cosigned[witness.name] = max(check.cosigned.get(witness.name, 0),
                                                       point.size)
        except NoteError as exc:
            return check.fail(f"a checkpoint does not verify: {exc}", None)
        if point.size in points and points[point.size].root != point.root:
            return check.fail(f"two checkpoints of size {point.size} with different roots "
                              "(the log was forked)", None)
        points[point.size] = point
    if verifier is not None:
        if not points:
            return check.fail(f"no checkpoint signed by {verifier.name}: nothing shows the "
                              "export is complete", None)
        check.signed = len(points)
    check.checkpoints = len(points)
    for witness in witnesses:
        if witness.name not in check.cosigned:
            return check.fail(f"no checkpoint is cosigned by the witness {witness.name}", None)
    good = 0
    for size in sorted(points):
        if size > tree.size:
            return check.fail(f"truncated: checkpoint of size {size}, export holds "
                              f"{tree.size}", tree.size + 1)
        if tree.root(size) != points[size].root:
            return check.fail(f"the records up to seq {size} do not match the checkpoint of "
                              f"size {size}; the first bad record is after seq {good}",
                              good + 1)
        good = size
    check.largest = good
    return check
