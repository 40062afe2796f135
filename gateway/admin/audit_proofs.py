"""The audit log's proofs in the admin API: checkpoints, the key, proofs, the export.

``GET /v1/audit/checkpoint`` serves the newest signed checkpoint (a C2SP signed
note, with any witness cosignatures), ``/v1/audit/key`` the verifier key to
check it with, ``/v1/audit/proof/{inclusion,consistency}`` RFC 9162 proofs
from the tree the checkpoint service keeps, and ``/v1/audit/export`` every
record with its leaf hash and, after the record that completes it, each
checkpoint of that size: what ``gateway audit verify --export`` checks
offline. A checkpoint is served only once the store's ``flush`` confirms it
durable (unless this process already knows it is: ``Checkpoints.confirmed``):
its commit, cut while the primary waited for its synchronous standby, may be on
the primary alone, and a failover would drop it.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from gateway.admin.auth import Operator, requires
from gateway.admin.controls import Controls
from gateway.core.merkle import record_leaf
from gateway.deadline import within
from gateway.errors import AdminError

EXPORT_PAGE = 5000
FLUSH_WAIT = 2.0  # seconds a proof waits for records queued here, a checkpoint for its flush
NOTE_TYPE = "text/plain; charset=utf-8"


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


Viewer = Annotated[Operator, Depends(requires("viewer"))]


def add_audit_proof_routes(app: FastAPI, gateway: Controls) -> None:
    @app.get("/v1/audit/checkpoint", response_class=PlainTextResponse)
    async def audit_checkpoint(operator: Viewer) -> PlainTextResponse:
        newest = await gateway.store.checkpoints(limit=1)
        if not newest:
            raise AdminError(404, "not_found", "no checkpoint has been signed yet")
        if not gateway.checkpoints.confirmed(newest[-1]):
            await durable(gateway)  # read first, then flush: its answer covers the row
        return PlainTextResponse(newest[-1].note, media_type=NOTE_TYPE)

    @app.get("/v1/audit/key", response_class=PlainTextResponse)
    async def audit_key(operator: Viewer) -> PlainTextResponse:
        signer = gateway.checkpoints.signer
        if signer is None:
            raise AdminError(404, "not_found", "no audit_signing_key is configured")
        return PlainTextResponse(signer.verifier_key() + "\n", media_type=NOTE_TYPE)

    async def tree_of(size: int) -> Any:
        tree = gateway.checkpoints.tree
        if size > tree.size:  # this process's queued records first, for a bounded time
            with contextlib.suppress(TimeoutError):
                await within(gateway.audit.flush(), FLUSH_WAIT)
            await gateway.checkpoints.sync()
        if size > tree.size:
            raise AdminError(404, "not_found", f"the audit log holds {tree.size} records, "
                                               f"not {size}")
        return tree

    @app.get("/v1/audit/proof/inclusion")
    async def inclusion(operator: Viewer, seq: Annotated[int, Query(ge=1)],
                        size: Annotated[int, Query(ge=1)]) -> dict[str, Any]:
        if seq > size:
            raise AdminError(400, "bad_request", f"seq {seq} is not in a tree of size {size}")
        tree = await tree_of(size)
        return {"leaf_index": seq - 1, "tree_size": size,
                "hashes": _b64(tree.inclusion(seq - 1, size))}

    @app.get("/v1/audit/proof/consistency")
    async def consistency(operator: Viewer, to: Annotated[int, Query(ge=0)],
                          old: Annotated[int, Query(ge=0, alias="from")]) -> dict[str, Any]:
        if old > to:
            raise AdminError(400, "bad_request", f"from ({old}) is larger than to ({to})")
        tree = await tree_of(to)
        return {"hashes": _b64(tree.consistency(old, to))}

    @app.get("/v1/audit/export")
    async def export(operator: Viewer, format: str = "jsonl") -> StreamingResponse:
        if format != "jsonl":
            raise AdminError(400, "bad_request", "format must be jsonl")
        points = await gateway.store.checkpoints(limit=1_000_000)
        if points:  # any of them may be on the primary alone, not only the newest
            await durable(gateway)
        return StreamingResponse(_lines(gateway, points), media_type="application/jsonl")


async def durable(gateway: Controls) -> None:
    """Until the checkpoints just read are durable (``flush``), for a bounded time."""
    try:
        await within(gateway.store.flush(), FLUSH_WAIT)
    except TimeoutError:
        raise AdminError(503, "store_unavailable", (
            "the store is unavailable: the newest checkpoints are not yet on its "
            "synchronous standby (down?); try again")) from None


async def _lines(gateway: Controls, points: list[Any]) -> AsyncIterator[bytes]:
    by_size: dict[int, list[Any]] = {}
    for point in points:
        by_size.setdefault(point.size, []).append(point)
    after = 0
    while True:
        page = await gateway.store.list_audit(after, EXPORT_PAGE)
        if not page:
            break
        chunk = []
        for record in page:
            line = {**record.to_json(), "leaf_hash": record_leaf(record.hash).hex()}
            chunk.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
            chunk.extend(_checkpoint_line(p) for p in by_size.pop(record.seq, []))
        yield ("\n".join(chunk) + "\n").encode()
        after = page[-1].seq
    rest = [_checkpoint_line(p) for size in sorted(by_size) for p in by_size[size]]
    if rest:  # checkpoints larger than the records: the export shows the truncation
        yield ("\n".join(rest) + "\n").encode()


def _checkpoint_line(point: Any) -> str:
    return json.dumps({"checkpoint": {"size": point.size, "root": point.root,
                                      "note": point.note}},
                      ensure_ascii=False, separators=(",", ":"))
