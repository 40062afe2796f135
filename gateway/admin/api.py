"""The admin REST API (contract's "Admin listener" table).

Routes are thin: parse, call the running gateway (``Controls``), render. Errors are one
JSON shape, ``{"error": {"code", "message"}}``, mapped in one place below.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError

from gateway import dashboard
from gateway.admin.audit_proofs import add_audit_proof_routes
from gateway.admin.auth import Operator, OperatorDirectory, requires
from gateway.admin.autonomy import add_autonomy_routes
from gateway.admin.controls import Controls
from gateway.admin.docs import mount_docs
from gateway.admin.fast_engage import FastEngage
from gateway.admin.render import journal_item
from gateway.core.approvals import public_view
from gateway.core.killswitch import scope_of
from gateway.core.model import Freeze, FreezeScope, JournalQuery, iso, parse_iso, utcnow
from gateway.errors import AdminError
from gateway.metrics import CONTENT_TYPE
from gateway.services.rollbacks import Selection
from gateway.store.diagnose import store_errors, unavailable

log = logging.getLogger("gateway.admin")

Viewer = Annotated[Operator, Depends(requires("viewer"))]
Approver = Annotated[Operator, Depends(requires("approver"))]
Admin = Annotated[Operator, Depends(requires("admin"))]


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(default=None, max_length=2000)
    digest: str | None = None


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[str] | None = None
    agent: str | None = None
    run: str | None = None
    upstream: str | None = None
    since: str | None = None
    until: str | None = None
    dry_run: bool = True
    force: bool = False


class FreezeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)
    upstream: str | None = None
    agent: str | None = None


def create_admin_app(gateway: Controls) -> FastAPI:
    app = FastAPI(title="Agent gateway admin API", version="1",
                  description="Operators' API: kill switch, change journal, policies, audit.",
                  docs_url=None, redoc_url=None)  # /docs from packaged assets, below
    mount_docs(app)
    app.state.gateway = gateway
    app.state.operators = OperatorDirectory(
        [(o.name, o.role, o.token_sha256) for o in gateway.settings.operators])

    @app.exception_handler(AdminError)
    async def _admin_error(request: Request, exc: AdminError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": {"code": exc.code, "message": exc.message, **exc.extra}},
                            exc.status, headers=headers)

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        why = unavailable(exc, gateway.settings.database_url)
        if why is None:  # not the store being down: a bug, shown as one
            log.error("unexpected error on %s %s", request.method, request.url.path,
                      exc_info=exc)
            return JSONResponse({"error": {"code": "internal_error",
                                           "message": "internal error"}}, 500)
        return JSONResponse({"error": {"code": "store_unavailable",
                                       "message": f"the store is unavailable: {why}"}},
                            503, headers={"Retry-After": "1"})

    # while the store is down: 503 with the cause
    for kind in (*store_errors(gateway.settings.database_url), DBAPIError):
        app.add_exception_handler(kind, _store_down)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": {"code": "bad_request", "message": "; ".join(problems)}},
                            400)

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        store_ok = await gateway.store.ping()
        body = {"status": "ok" if store_ok else "degraded", "store": store_ok,
                "policy_revision": gateway.policies.revision,
                **gateway.checkpoints.health()}  # "audit" and "anchors": never fail health
        return JSONResponse(body, 200 if store_ok else 503)

    def killswitch_state() -> dict[str, Any]:
        freezes = gateway.freezes.active
        return {"engaged": bool(freezes), "freezes": [f.to_json() for f in freezes]}

    @app.get("/v1/killswitch")
    async def killswitch(operator: Viewer) -> dict[str, Any]:
        await gateway.freezes.load()  # the store is the truth, also for other processes
        return killswitch_state()

    def scope(body: FreezeRequest) -> Any:
        try:
            return scope_of(body.upstream, body.agent)
        except ValueError as exc:
            raise AdminError(400, "bad_request", str(exc)) from None

    def configured(kind: str, target: str | None) -> None:
        """A freeze on a name nothing answers to would freeze nothing while saying
        "engaged": refused (a typo such as ``--upstream crmm``)."""
        known = {"upstream": set(gateway.policies.upstreams),
                 "agent": {a.name for a in gateway.settings.agents}
                 | ({"anonymous"} if gateway.settings.allow_anonymous_agents else set())
                 }.get(kind)
        if known is not None and target not in known:
            raise AdminError(400, "unknown_target",
                             f"no {kind} named {target!r} is configured"
                             + (f" (configured: {', '.join(sorted(known))})" if known else ""))

    def checked(upstream: str | None, agent: str | None) -> tuple[FreezeScope, str | None]:
        kind, target = scope_of(upstream, agent)  # ValueError: the route says 400
        configured(kind, target)
        return kind, target

    async def engaged(kind: FreezeScope, target: str | None, reason: str,
                      operator: Operator) -> dict[str, Any]:
        engaged = await gateway.freezes.engage(Freeze(kind, target, reason, operator.name,
                                                      utcnow()))
        gateway.metrics.freeze_engaged()
        return {**killswitch_state(), "freeze": engaged.freeze.to_json(),
                "in_flight": [w.to_json() for w in engaged.in_flight]}

    @app.post("/v1/killswitch/engage")  # what FastEngage (below) does not take itself
    async def engage(body: FreezeRequest, operator: Approver) -> dict[str, Any]:
        kind, target = scope(body)
        configured(kind, target)
        return await engaged(kind, target, body.reason, operator)

    app.add_middleware(FastEngage, check=checked, engage=engaged,
                       operators=lambda: app.state.operators,
                       handlers=lambda: app.exception_handlers)

    @app.post("/v1/killswitch/release")
    async def release(body: FreezeRequest, operator: Admin) -> dict[str, Any]:
        kind, target = scope(body)
        released = await gateway.freezes.release(kind, target, operator.name, body.reason,
                                                 utcnow())
        return {**killswitch_state(), "released": released.to_json() if released else None}

    @app.get("/v1/approvals")
    async def approvals(operator: Viewer, status: str | None = None, agent: str | None = None,
                        upstream: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        await gateway.approvals.sweep()
        calls = await gateway.store.list_held(status, agent, upstream, limit)
        return {"items": [public_view(c) for c in calls]}

    @app.get("/v1/approvals/{call_id}")
    async def approval(call_id: str, operator: Viewer) -> dict[str, Any]:
        return await gateway.approvals.show(call_id)

    @app.post("/v1/approvals/{call_id}/approve")
    async def approve(call_id: str, operator: Approver,
                      body: ApproveRequest | None = None) -> dict[str, Any]:
        body = body or ApproveRequest()
        return await gateway.approvals.approve(call_id, operator.name, operator.role,
                                               body.comment, body.digest)

    @app.post("/v1/approvals/{call_id}/reject")
    async def reject(call_id: str, operator: Approver,
                     body: RejectRequest | None = None) -> dict[str, Any]:
        body = body or RejectRequest()
        return await gateway.approvals.reject(call_id, operator.name, body.reason)

    @app.post("/v1/rollback")
    async def rollback(body: RollbackRequest, operator: Admin) -> dict[str, Any]:
        selection = Selection(entries=tuple(body.entries) if body.entries else None,
                              agent=body.agent, run=body.run, upstream=body.upstream,
                              since=_time(body.since, "since"), until=_time(body.until, "until"))
        plan = await gateway.rollbacks.start(selection, operator.name, body.dry_run, body.force)
        return {"plan": plan.to_json()}

    @app.get("/v1/rollback")
    async def rollbacks(operator: Viewer,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        return {"items": [p.to_json() for p in await gateway.store.list_plans(limit)]}

    @app.get("/v1/rollback/{plan_id}")
    async def rollback_plan(plan_id: str, operator: Viewer) -> dict[str, Any]:
        plan = await gateway.store.get_plan(plan_id)
        if plan is None:
            raise AdminError(404, "not_found", f"no rollback plan {plan_id}")
        return {"plan": plan.to_json()}

    @app.post("/v1/rollback/{plan_id}/apply")
    async def rollback_apply(plan_id: str, operator: Admin) -> dict[str, Any]:
        """Apply a dry run exactly as previewed (409 unless it is a dry run not yet applied)."""
        return {"plan": (await gateway.rollbacks.apply_previewed(plan_id, operator.name)
                         ).to_json()}

    @app.post("/v1/rollback/{plan_id}/resume")
    async def rollback_resume(plan_id: str, operator: Admin) -> dict[str, Any]:
        return {"plan": (await gateway.rollbacks.resume(plan_id, operator.name)).to_json()}

    @app.get("/v1/journal")
    async def journal(operator: Viewer, agent: str | None = None, upstream: str | None = None,
                      run: str | None = None, since: str | None = None,
                      until: str | None = None, method: str | None = None,
                      path: str | None = None, state: str | None = None,
                      decision: str | None = None, would_decide: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        query = JournalQuery(agent=agent, upstream=upstream, run=run, since=_time(since, "since"),
                             until=_time(until, "until"), limit=limit,
                             method=method.upper() if method else None, path=path or None,
                             state=state or None, decision=decision or None,
                             would_decide=would_decide or None)
        await gateway.journal.settled()  # this process's answered writes, with their outcomes
        entries = await gateway.store.list_journal(query)
        return {"items": [journal_item(e) for e in entries]}

    @app.get("/v1/runs")
    async def runs(operator: Viewer, agent: str | None = None, upstream: str | None = None,
                   run: str | None = None, since: str | None = None, until: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Agents' runs (X-Agent-Run), newest first: span, writes, reversibility."""
        query = JournalQuery(agent=agent, upstream=upstream, run=run, since=_time(since, "since"),
                             until=_time(until, "until"), limit=limit)
        await gateway.journal.settled()
        return {"items": [r.to_json() for r in await gateway.store.list_runs(query)]}

    @app.get("/v1/journal/{entry_id}/trail")
    async def journal_trail(entry_id: str, operator: Viewer) -> dict[str, Any]:
        """One entry with what surrounds it: its audit records, the approval that held it,
        the rollback plans that included it and the compensations they sent."""
        await gateway.journal.settled()
        entry = await gateway.store.get_journal(entry_id)
        if entry is None:
            raise AdminError(404, "not_found", f"no journal entry {entry_id}")
        approval_id = (entry.approval or {}).get("id")
        held = await gateway.store.get_held(approval_id) if approval_id else None
        plans = await gateway.store.plans_for_entry(entry_id)
        steps = [{"plan": p.id, "plan_status": p.status.value, "created_at": iso(p.created_at),
                  "by": p.by, **s.to_json()} for p in plans for s in p.steps
                 if s.entry_id == entry_id]
        terms = [entry.id, entry.request_id] + ([approval_id] if approval_id else []) + \
            [p.id for p in plans]
        return {"entry": journal_item(entry),
                "audit": [r.to_json() for r in await gateway.store.find_audit(terms)],
                "approval": public_view(held) if held is not None else None,
                "rollbacks": steps}

    @app.get("/v1/journal/{entry_id}")
    async def journal_entry(entry_id: str, operator: Viewer) -> dict[str, Any]:
        await gateway.journal.settled()
        entry = await gateway.store.get_journal(entry_id)
        if entry is None:
            raise AdminError(404, "not_found", f"no journal entry {entry_id}")
        return journal_item(entry)

    @app.post("/v1/policies/reload")
    async def reload(operator: Admin) -> JSONResponse:
        result = await gateway.reload_policies(operator.name)
        if not result.ok:
            return JSONResponse({"error": {"code": "invalid_policy", "message":
                                           "the policy set is invalid; the last good one stays",
                                           "problems": result.problems,
                                           "revision": result.revision}}, 422)
        return JSONResponse({"revision": result.revision,
                             "upstreams": sorted(gateway.policies.upstreams)})

    @app.get("/v1/audit")
    async def audit(operator: Viewer, after: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> dict[str, Any]:
        records = await gateway.store.list_audit(after, limit)
        return {"items": [r.to_json() for r in records]}

    @app.get("/v1/audit/verify")
    async def audit_verify(operator: Viewer) -> dict[str, Any]:
        from gateway.core.audit import verify
        records, after = [], 0
        while True:
            page = await gateway.store.list_audit(after, 10000)
            if not page:
                break
            records.extend(page)
            after = page[-1].seq
        return verify(records).to_json()

    add_autonomy_routes(app, gateway)  # shadow runs, promotion, drills, the autonomy report
    add_audit_proof_routes(app, gateway)  # checkpoints, key, proofs, export (issue 19)

    page = dashboard.load()  # read once; the page asks for a token, the API checks it

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page.html, headers=page.headers)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        try:
            pending: int | None = await gateway.store.count_held("pending")
        except Exception:  # the store is down: the other series still tell operators a lot
            pending = None
        body = gateway.metrics.render(len(gateway.freezes.active), gateway.policies.revision,
                                      pending)
        return Response(body, media_type=CONTENT_TYPE)

    return app


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise AdminError(400, "bad_request", f"{name} must be an ISO-8601 time") from None
