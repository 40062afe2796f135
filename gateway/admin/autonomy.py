"""Admin routes for earned autonomy: shadow runs, promotion, drills, the autonomy report.

- ``GET /v1/shadow`` (viewer): shadowed writes as proposed changes, with their
  diffs and whether each was promoted (and how its approval stands);
- ``POST /v1/shadow/promote {"entries": [...]}`` (approver): turn shadowed
  writes into held calls (exactly as sent, digest-bound), to approve as usual;
- ``POST /v1/drills`` (approver): record a drill's JSON report (its times) in
  the audit chain, as ``gateway drill --record`` does;
- ``GET /v1/report/autonomy?since=&until=&upstream=`` (viewer): the report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.auth import Operator, requires
from gateway.admin.controls import Controls
from gateway.admin.render import journal_item
from gateway.core.model import JournalQuery, JournalState, parse_iso, utcnow
from gateway.deadline import within
from gateway.errors import AdminError
from gateway.services.reports import autonomy_report, record_drill

Viewer = Annotated[Operator, Depends(requires("viewer"))]
Approver = Annotated[Operator, Depends(requires("approver"))]
DEFAULT_WINDOW = timedelta(days=30)
FLUSH_WAIT = 2.0  # seconds the report waits for this process's queued audit records


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[str] = Field(min_length=1, max_length=1000)


def _time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise AdminError(400, "bad_request", f"{name} must be an ISO-8601 time") from None


def add_autonomy_routes(app: FastAPI, gateway: Controls) -> None:
    @app.get("/v1/shadow")
    async def shadow(operator: Viewer, agent: str | None = None, upstream: str | None = None,
                     run: str | None = None, since: str | None = None,
                     until: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Shadowed writes, newest first: each a proposed change with its diff."""
        query = JournalQuery(agent=agent, upstream=upstream, run=run,
                             since=_time(since, "since"), until=_time(until, "until"),
                             limit=limit, state=JournalState.SHADOW.value)
        entries = await gateway.store.list_journal(query)
        kept = await gateway.shadows.proposals([e.id for e in entries])
        items = []
        for entry in entries:
            held = kept.get(entry.id)
            proposal = None if held is None else {
                "status": held.status.value, "approval": held.id,
                "promoted": held.status.value != "shadow", "digest": held.digest,
                "promoted_by": held.extra.get("shadow", {}).get("promoted_by")}
            items.append({**journal_item(entry), "proposal": proposal})
        return {"items": items}

    @app.post("/v1/shadow/promote")
    async def promote(body: PromoteRequest, operator: Approver) -> dict[str, Any]:
        """Shadowed writes become held calls, once each; approve them as usual."""
        return {"items": await gateway.shadows.promote(body.entries, operator.name)}

    @app.post("/v1/drills")
    async def drills(body: dict[str, Any], operator: Approver) -> dict[str, Any]:
        try:
            record = await record_drill(gateway.store, operator.name, body, utcnow())
        except ValueError as exc:
            raise AdminError(400, "bad_request", str(exc)) from None
        return {"drill": record.detail, "audit": record.to_json()}

    @app.get("/v1/report/autonomy")
    async def report(operator: Viewer, since: str | None = None, until: str | None = None,
                     upstream: str | None = None) -> dict[str, Any]:
        now = utcnow()
        end = _time(until, "until") or now
        start = _time(since, "since") or end - DEFAULT_WINDOW
        if start > end:
            raise AdminError(400, "bad_request", "since must not be after until")
        try:  # this process's decisions still queued for the chain are counted too
            await within(gateway.audit.flush(), FLUSH_WAIT)
        except TimeoutError:
            pass
        return await autonomy_report(gateway.store, gateway.policies, start, end,
                                     upstream or None, now)
