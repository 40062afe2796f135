"""How much of an API's writes a generated policy can capture and undo, against
how much the description makes possible at all.

"Possible" is read loosely from the description alone, independent of
``infer``: a write could be captured when a GET that answers with a body
exists on its template or on the template above it, and undone when an
inverse operation exists (a PUT, PATCH or DELETE on the same template for PUT
and PATCH; a PUT there or a POST to the collection for DELETE; for POST a
DELETE of an item below when its answer may name the new id, an update on the
same template, or an ``un``-action beside it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.core.openapi.document import Api, Operation
from gateway.core.openapi.infer import Draft, reads_only


@dataclass(frozen=True, slots=True)
class Coverage:
    operations: int
    writes: int
    captured: int
    undoable: int
    capture_possible: int
    undo_possible: int

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.operations, self.writes, self.captured, self.undoable,
                self.capture_possible, self.undo_possible)


def _shape(template: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", template)


def possible(api: Api) -> tuple[int, int, int]:
    """(writes, writes that could be captured, writes that could be undone)."""
    ops: dict[str, set[str]] = {}
    for op in api.operations:
        if not (op.method == "GET" and op.empty):  # a yes-or-no GET reads no state
            ops.setdefault(_shape(op.template), set()).add(op.method)
    writes = capture = undo = 0
    for op in api.operations:
        if op.method == "OPTIONS" or reads_only(op):
            continue
        writes += 1
        shape = _shape(op.template)
        parent, _, last = shape.rstrip("/").rpartition("/")
        here, above = ops.get(shape, set()), ops.get(parent, set())
        capture += "GET" in here or "GET" in above
        undo += _inverse(op, shape, parent, last, here, above, ops)
    return writes, capture, undo


def _inverse(op: Operation, shape: str, parent: str, last: str, here: set[str],
             above: set[str], ops: dict[str, set[str]]) -> bool:
    if op.method in ("PUT", "PATCH"):
        return ("GET" in here and bool({"PUT", "PATCH"} & here)) or "DELETE" in here
    if op.method == "DELETE":
        return "PUT" in here or "POST" in above
    if op.method == "POST":
        pair = last[2:] if last.startswith("un") else "un" + last
        names_id = op.answer is None or "id" in op.answer or op.location
        return ("DELETE" in ops.get(shape + "/{}", set()) and names_id
                or "GET" in here and shape.endswith("}")
                or "POST" in ops.get(f"{parent}/{pair}", set()))
    return False


def coverage(api: Api, drafts: list[Draft]) -> Coverage:
    writes = [d for d in drafts if d.write]
    _, could_capture, could_undo = possible(api)
    return Coverage(len(api.operations), len(writes), sum(1 for d in writes if d.capture),
                    sum(1 for d in writes if d.undoable), could_capture, could_undo)
