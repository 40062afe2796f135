"""Secrets: redacted in every view, never plaintext in the store, yet restored by rollback
and sent intact when an approved call runs.

One row per place a secret travels (a query parameter, a JSON or form field, a header, a
field of the resource's prior state). Each row plants a canary there in a direct write and
in a held call that is then approved, rolls the run back, and searches every view for the
canary: journal, runs, trail and entry (what the dashboard shows), approvals list and
detail and the approve answer, webhooks, rollback plans, audit, the gateway's logs, and the
store itself (the SQLite file's bytes, PostgreSQL's rows), on both stores. Adding a place
is one row.
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo.crm import CRM, create_app
from gateway.errors import SettingsError
from gateway.settings import WebhookSettings
from tests.harness import Harness, policy_text, serve_app, started_gateway, until

UPSTREAM_TOKEN = "upstream-secret"
KEY = base64.b64encode(b"k" * 32).decode()
OTHER_KEY = base64.b64encode(b"o" * 32).decode()

RULES = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH, PUT], path: "/customers/{id}"}
  action: allow
- id: held-deal
  match: {methods: [PATCH], path: "/deals/{id}"}
  action: hold
  approval: {wait: 0, expires: 3600}
- id: replace-deal
  match: {methods: [PUT], path: "/deals/{id}"}
  action: allow
  undo: none
"""
VOLATILE = "volatile: [updated_at]\n"
CREDENTIALS = f'credentials: {{header: Authorization, value: "Bearer {UPSTREAM_TOKEN}"}}\n'
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class Place:
    """Where a row puts its canary ``c``: ``request(c)`` is the write's httpx arguments;
    ``prior`` also plants it in the resource the write changes (a secret-named field)."""

    id: str
    request: Callable[[str], dict[str, Any]]
    prior: bool = False
    sent: Callable[[dict[str, Any], str], bool] = field(
        default=lambda logged, c: c in logged["query"] + logged["body"])


PLACES = [
    Place("query api_key token password",
          lambda c: {"params": {"api_key": c, "token": c, "password": c},
                     "json": {"stage": "won"}}),
    Place("json field", lambda c: {"json": {"stage": "won", "password": c}}),
    Place("json nested field", lambda c: {"json": {"stage": "won",
                                                   "auth": {"client_secret": c}}}),
    Place("form field", lambda c: {"content": f"stage=won&password={c}", "headers": FORM}),
    Place("form bracket field", lambda c: {"content": f"stage=won&card[cvc]={c}",
                                           "headers": FORM}),
    Place("header", lambda c: {"json": {"stage": "won"}, "headers": {"X-Auth-Token": c}},
          sent=lambda logged, c: True),  # secret headers are not held (nor re-sent)
    Place("prior state field", lambda c: {"json": {"stage": "won"}}, prior=True,
          sent=lambda logged, c: True),
]


def strip(data: dict[str, Any], as_text: bool = False) -> dict[str, Any]:
    """The CRM's state without volatile fields; ``as_text``: values as a form API keeps
    them (a form-encoded undo sends ``1200`` as text, as the original form call did)."""
    return {name: {key: {k: str(v) if as_text else v for k, v in item.items()
                         if k != "updated_at"}
                   for key, item in items.items()} for name, items in data.items()}


@pytest.fixture
async def crm() -> AsyncIterator[tuple[CRM, str]]:
    app = create_app(token=UPSTREAM_TOKEN)
    async with serve_app(app) as url:
        yield app, url


class Hooks:
    """A webhook receiver: every payload body, as text."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body.decode())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[Hooks, str]]:
    receiver = Hooks()
    async with serve_app(receiver) as url:
        yield receiver, url


def _key_settings(store_url: str) -> dict[str, Any]:
    """PostgreSQL takes the key from settings; SQLite uses its key file (both paths run)."""
    return {"journal_key": KEY} if store_url.startswith("postgresql") else {}


async def _store_text(store_url: str, db_dir: Path) -> str:
    """Everything the store holds, as text: the SQLite files' bytes or every PG row."""
    if not store_url.startswith("postgresql"):
        return "".join(p.read_bytes().decode("latin-1") for p in sorted(db_dir.iterdir())
                       if p.name.startswith("gateway.db") and not p.name.endswith(".key"))
    import asyncpg  # the PostgreSQL rows alone need the driver

    dsn = store_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(dsn)
    try:
        tables = [r["tablename"] for r in await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        parts = []
        for table in tables:
            rows = await connection.fetch(f'SELECT t::text AS row FROM "{table}" t')
            parts.extend(r["row"] for r in rows)
        return "\n".join(parts)
    finally:
        await connection.close()


async def _views(gw: Harness, hooks: Hooks, answers: dict[str, Any],
                 logs: str) -> dict[str, str]:
    """Every view an operator, a receiver or a log reader has, as text."""
    viewer = gw.as_role("viewer")

    async def get(path: str, **params: Any) -> str:
        response = await gw.admin.get(path, params=params, headers=viewer)
        assert response.status_code == 200, (path, response.text)
        return response.text

    entries = await gw.journal(limit=1000)
    approvals = (await gw.admin.get("/v1/approvals", headers=viewer)).json()["items"]
    plans = (await gw.admin.get("/v1/rollback", headers=viewer)).json()
    return {
        "journal": await get("/v1/journal", limit=1000),
        "dashboard runs": await get("/v1/runs"),
        "dashboard entry": "".join([await get(f"/v1/journal/{e['id']}") for e in entries]),
        "dashboard trail": "".join([await get(f"/v1/journal/{e['id']}/trail")
                                    for e in entries]),
        "approvals list": await get("/v1/approvals"),
        "approval detail": "".join([await get(f"/v1/approvals/{a['id']}") for a in approvals]),
        "approve answer": str(answers.get("approve")),
        "webhooks": "".join(hooks.bodies),
        "rollback dry run": str(answers.get("dry")),
        "rollback applied": str(answers.get("applied")),
        "rollback plans": str(plans) + "".join(
            [await get(f"/v1/rollback/{p['id']}") for p in plans.get("items", [])]),
        "audit": await get("/v1/audit"),
        "logs": logs,
    }


@pytest.mark.parametrize("place", PLACES, ids=[p.id for p in PLACES])
async def test_a_secret_is_redacted_everywhere_sealed_and_restored(
        place: Place, tmp_path: Path, store_url: str, crm: tuple[CRM, str],
        hooks: tuple[Hooks, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app, url = crm
    canary = f"cnry{uuid.uuid4().hex}"
    if place.prior:
        app.data["customers"]["cus_1"]["api_key"] = canary
        app.data["deals"]["deal_1"]["api_key"] = canary
        app.data["deals"]["deal_2"]["api_key"] = canary
    initial = copy.deepcopy(app.data)
    text = policy_text(url, RULES, extra=VOLATILE + CREDENTIALS)
    answers: dict[str, Any] = {}
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text},
                               approval_webhook=WebhookSettings(url=hooks[1] + "/hook"),
                               access_log=True,
                               **_key_settings(store_url)) as gw:
        run = {"X-Agent-Run": "r1"}
        arguments = place.request(canary)
        headers = {**run, **arguments.pop("headers", {})}
        direct = await gw.agent.patch("/crm/customers/cus_1", headers=headers, **arguments)
        assert direct.status_code == 200, direct.text
        arguments = place.request(canary)  # irreversible: listed in plans with what is known
        headers = {**run, **arguments.pop("headers", {})}
        replaced = await gw.agent.put("/crm/deals/deal_2", headers=headers, **arguments)
        assert replaced.status_code == 200, replaced.text
        arguments = place.request(canary)
        headers = {**run, **arguments.pop("headers", {})}
        held = await gw.agent.patch("/crm/deals/deal_1", headers=headers, **arguments)
        assert held.status_code == 202, held.text
        call_id = held.json()["approval"]["id"]
        sent_before = len(app.log)
        approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.status_code == 200, approved.text
        answers["approve"] = approved.json()
        executed = [c for c in app.log[sent_before:] if c["method"] == "PATCH"]
        assert len(executed) == 1 and place.sent(executed[0], canary), executed
        assert app.data["deals"]["deal_1"]["stage"] == "won"
        await until(lambda: len(hooks[0].bodies) >= 2, "the held and executed webhooks")

        dry = await gw.admin.post("/v1/rollback", json={"run": "r1"},
                                  headers=gw.as_role("admin"))
        answers["dry"] = dry.json()
        applied = await gw.admin.post("/v1/rollback", json={"run": "r1", "dry_run": False},
                                      headers=gw.as_role("admin"))
        answers["applied"] = applied.json()
        steps = applied.json()["plan"]["steps"]
        assert [s["status"] for s in steps] == ["applied", "applied"], applied.json()
        assert len(applied.json()["plan"]["irreversible"]) == 1
        form = "content" in place.request(canary)
        del app.data["deals"]["deal_2"], initial["deals"]["deal_2"]  # undo: none
        assert strip(app.data, form) == strip(initial, form)  # secret-named fields included

        logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                         if r.name.startswith(("gateway", "uvicorn")))  # not the test's client
        views = await _views(gw, hooks[0], answers, logs)
        stored = await _store_text(store_url, Path(store_url.split("///", 1)[-1]).parent)
    leaked = sorted(name for name, text in {**views, "store": stored}.items() if canary in text)
    assert leaked == [], f"the canary of {place.id!r} shows in {leaked}"
    assert "[REDACTED]" in views["journal"] + views["approval detail"]


async def test_the_sqlite_key_file_is_created_beside_the_database_0600(
        tmp_path: Path, crm: tuple[CRM, str]) -> None:
    (tmp_path / "db").mkdir()
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'gateway.db'}"
    async with started_gateway(tmp_path, url, {"crm.yaml": policy_text(crm[1], RULES)}):
        pass
    key_file = tmp_path / "db" / "gateway.db.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32


async def _secret_write_then_restart(tmp_path: Path, store_url: str, crm: tuple[CRM, str],
                                     first: dict[str, Any], second: dict[str, Any]
                                     ) -> tuple[dict[str, Any], httpx.Response, list[Any]]:
    """A write over a secret-named field and a held call under one key; under another,
    a rollback and the approval. What each answered, and what reached the upstream."""
    app, url = crm
    app.data["customers"]["cus_1"]["api_key"] = "true-prior-value"
    text = policy_text(url, RULES, extra=VOLATILE + CREDENTIALS)
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text}, **first) as gw:
        response = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"},
                                        headers={"X-Agent-Run": "k"})
        assert response.status_code == 200
        held = await gw.agent.patch("/crm/deals/deal_1?token=held-secret", json={"stage": "x"})
        assert held.status_code == 202
        call_id = held.json()["approval"]["id"]
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text}, **second) as gw:
        sent = len(app.log)
        plan = await gw.admin.post("/v1/rollback", json={"run": "k", "dry_run": False},
                                   headers=gw.as_role("admin"))
        assert plan.status_code == 200, plan.text
        approve = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                      headers=gw.as_role("approver"))
    return plan.json()["plan"], approve, [c for c in app.log[sent:] if c["method"] != "GET"]


async def test_a_wrong_key_refuses_the_step_and_the_approval_with_the_reason(
        tmp_path: Path, store_url: str, crm: tuple[CRM, str]) -> None:
    plan, approve, sent = await _secret_write_then_restart(
        tmp_path, store_url, crm, {"journal_key": KEY}, {"journal_key": OTHER_KEY})
    [step] = plan["steps"]
    assert step["status"] == "failed" and "does not open" in step["detail"], step
    assert approve.status_code == 409 and approve.json()["error"]["code"] == "sealed_unavailable"
    assert "does not open" in approve.json()["error"]["message"]
    assert sent == []  # neither the redacted state nor the redacted call went out
    customer = crm[0].data["customers"]["cus_1"]
    assert (customer["plan"], customer["api_key"]) == ("free", "true-prior-value")


async def test_a_wrong_key_leaves_the_held_call_pending_for_the_right_one(
        tmp_path: Path, store_url: str, crm: tuple[CRM, str]) -> None:
    """Nothing was sent under the wrong key, so the call is still the operators' to
    decide: pending, and executed once under the right key (issue 17 item 7)."""
    _, approve, sent = await _secret_write_then_restart(
        tmp_path, store_url, crm, {"journal_key": KEY}, {"journal_key": OTHER_KEY})
    assert approve.json()["error"]["code"] == "sealed_unavailable" and sent == []
    app, url = crm
    text = policy_text(url, RULES, extra=VOLATILE + CREDENTIALS)
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text}, journal_key=KEY) as gw:
        listed = await gw.admin.get("/v1/approvals", headers=gw.as_role("viewer"))
        [held] = [a for a in listed.json()["items"] if a["path"].startswith("/deals")]
        assert held["status"] == "pending", held
        before = len(app.log)
        approved = await gw.admin.post(f"/v1/approvals/{held['id']}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "executed"
    writes = [c for c in app.log[before:] if c["method"] != "GET"]
    assert [(c["method"], c["path"]) for c in writes] == [("PATCH", "/deals/deal_1")]
    assert "token=held-secret" in writes[0]["query"]


async def test_without_a_key_sqlite_uses_its_key_file_and_postgresql_refuses(
        tmp_path: Path, crm: tuple[CRM, str], store_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway"):
        plan, approve, sent = await _secret_write_then_restart(tmp_path, store_url, crm, {}, {})
    [step] = plan["steps"]
    customer = crm[0].data["customers"]["cus_1"]
    warned = [r.getMessage() for r in caplog.records if "no journal_key" in r.getMessage()]
    if store_url.startswith("postgresql"):  # no key: the secrets were not kept, anywhere
        # ... as the start warning says (it once said held calls were stored unencrypted)
        assert len(warned) == 2 and "unencrypted" not in warned[0], warned
        assert "held calls that carry them (approving one is refused" in warned[0]
        assert step["status"] == "failed" and "no journal key was configured" in step["detail"]
        assert (customer["plan"], customer["api_key"]) == ("free", "true-prior-value")
        # The held call carried ?token=: never stored in plaintext, so not sent redacted either.
        assert approve.status_code == 409, approve.text
        assert approve.json()["error"]["code"] == "sealed_unavailable"
        assert sent == []
    else:
        assert warned == []  # its key file
        assert approve.status_code == 200, approve.text  # the held call runs exactly
        assert "token=held-secret" in sent[-1]["query"]
        assert step["status"] == "applied", step
        assert (customer["plan"], customer["api_key"]) == ("pro", "true-prior-value")


@pytest.mark.parametrize("key", ["short", "not base64 at all!",
                                 base64.b64encode(b"x" * 16).decode()])
async def test_a_malformed_key_stops_the_start(key: str, tmp_path: Path,
                                                crm: tuple[CRM, str]) -> None:
    with pytest.raises(SettingsError, match="journal_key"):
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   {"crm.yaml": policy_text(crm[1], RULES)}, journal_key=key):
            pass


async def test_without_a_key_a_held_call_without_secrets_is_kept_and_runs_exactly(
        tmp_path: Path, crm: tuple[CRM, str], store_url: str) -> None:
    """Only what carries secrets needs the key: other held calls run as they were sent."""
    app, url = crm
    text = policy_text(url, RULES, extra=VOLATILE + CREDENTIALS)
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text}) as gw:
        held = await gw.agent.patch("/crm/deals/deal_1?note=plain", json={"stage": "won"})
        assert held.status_code == 202, held.text
        call_id = held.json()["approval"]["id"]
        sent = len(app.log)
        approve = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                      headers=gw.as_role("approver"))
        assert approve.status_code == 200, approve.text
        assert approve.json()["status"] == "executed"
    [patch] = [c for c in app.log[sent:] if c["method"] == "PATCH"]
    assert "note=plain" in patch["query"]
    assert app.data["deals"]["deal_1"]["stage"] == "won"


async def test_a_held_text_body_shows_its_secret_named_values_redacted(
        tmp_path: Path, store_url: str, hooks: tuple[Hooks, str]) -> None:
    """A text body (a config file, ``key=value`` lines) is redacted as a tool's text
    result is: each secret-named ``name=value`` hidden, in the held call and in the
    journal. The call is sealed (it carries a secret); approving it sends the exact bytes."""
    from tests.trust.test_priors import Files
    canary = f"cnry{uuid.uuid4().hex}"
    sent = f"user=ada\npassword={canary}\n".encode()
    rules = """
- id: held-files
  match: {methods: [PUT], path: "/files/{name}"}
  action: hold
  approval: {wait: 0, expires: 3600}
  capture: false
"""
    files = Files()
    async with serve_app(files) as url:
        async with started_gateway(tmp_path, store_url,
                                   {"files.yaml": policy_text(url, rules, upstream="files")},
                                   approval_webhook=WebhookSettings(url=hooks[1] + "/hook"),
                                   **_key_settings(store_url)) as gw:
            held = await gw.agent.put("/files/files/app.conf", content=sent,
                                      headers={"content-type": "text/plain"})
            assert held.status_code == 202, held.text
            call_id = held.json()["approval"]["id"]
            viewer = gw.as_role("viewer")
            detail = await gw.admin.get(f"/v1/approvals/{call_id}", headers=viewer)
            assert detail.json()["body"] == "user=ada\npassword=[REDACTED]\n", detail.text
            approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                           headers=gw.as_role("approver"))
            assert approved.status_code == 200, approved.text
            await until(lambda: len(hooks[0].bodies) >= 2, "the held and executed webhooks")
            views = {"approval detail": detail.text, "approve answer": approved.text,
                     "approvals list": (await gw.admin.get("/v1/approvals", headers=viewer)).text,
                     "webhooks": "".join(hooks[0].bodies),
                     "journal": (await gw.admin.get("/v1/journal", headers=viewer)).text}
            stored = await _store_text(store_url, Path(store_url.split("///", 1)[-1]).parent)
    assert files.files["app.conf"] == ("text/plain", sent)  # sent exactly
    leaked = sorted(name for name, text in {**views, "store": stored}.items() if canary in text)
    assert leaked == []
