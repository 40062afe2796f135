"""The autonomy report's reads: counts over a time window, added up in SQL.

``ReportQueries`` is a mixin of ``SqlStore``. Calls by decision are counted
from the audit chain, whose ``call.*`` records carry the upstream, rule and
would-be decision in their JSON detail: the fields are read with the
database's own JSON functions (``json_extract`` on SQLite, ``->>`` on
PostgreSQL) so a month of decisions is grouped where it lies, using the
``ix_audit_at`` index for the window. Held calls are few; they are read as
rows and judged by ``gateway.core.report``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, cast, literal_column
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.approvals import ApprovalStatus
from gateway.core.model import AuditRecord, JournalState, iso, parse_iso
from gateway.core.report import DecisionCount, HeldFact, RolledBack, decision_name
from gateway.store import codec
from gateway.store.tables import ApprovalRow, AuditRow, JournalRow


class ReportQueries:
    """``decision_counts``, ``held_facts``, ``rolled_back_counts``, ``last_audit`` of ``ports.Store``."""

    _engine: AsyncEngine
    _postgres: bool

    def _field(self, detail: Any, name: str) -> ColumnElement[Any]:
        if self._postgres:
            field: ColumnElement[Any] = detail[name].astext
            return field
        return func.json_extract(detail, literal_column(f"'$.{name}'"))

    async def decision_counts(self, since: datetime, until: datetime,
                              upstream: str | None = None) -> list[DecisionCount]:
        at, action = col(AuditRow.at), col(AuditRow.action)
        detail: Any = col(AuditRow.detail)
        if self._postgres:  # parsed once per record, not once per field
            detail = cast(detail, JSONB)
        rows_in = (sql_select(col(AuditRow.actor).label("actor"), action.label("action"),
                              detail.label("detail"))
                   .where(at >= iso(since), at <= iso(until), action.startswith("call.")))
        window = (rows_in.cte("window").prefix_with("MATERIALIZED") if self._postgres
                  else rows_in.subquery())
        parsed = window.c.detail
        up, rule = self._field(parsed, "upstream"), self._field(parsed, "rule")
        would = self._field(parsed, "would_decide")
        delayed = self._field(parsed, "delay").is_not(None)
        where: list[ColumnElement[bool]] = [up.is_not(None)]
        if upstream is not None:
            where.append(up == upstream)
        statement = (sql_select(up, rule, window.c.actor, window.c.action, would, delayed,
                                func.count())
                     .where(*where)
                     .group_by(up, rule, window.c.actor, window.c.action, would, delayed))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        counts: dict[tuple[Any, ...], int] = {}
        for u, r, a, act, w, d, n in rows:
            key = (u, r, a, decision_name(act, bool(d)), w)
            counts[key] = counts.get(key, 0) + int(n)
        return [DecisionCount(u, r, a, d, w, n) for (u, r, a, d, w), n in counts.items()]

    async def held_facts(self, since: datetime, until: datetime,
                         upstream: str | None = None) -> list[HeldFact]:
        at = col(ApprovalRow.at)
        columns = [col(c) for c in (ApprovalRow.upstream, ApprovalRow.rule, ApprovalRow.agent,
                                    ApprovalRow.status, ApprovalRow.at, ApprovalRow.decided_at,
                                    ApprovalRow.decided_by, ApprovalRow.extra)]
        statement = sql_select(*columns).where(
            at >= iso(since), at <= iso(until),
            col(ApprovalRow.status) != ApprovalStatus.SHADOW.value)
        if upstream is not None:
            statement = statement.where(col(ApprovalRow.upstream) == upstream)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        facts = []
        for row in rows:
            u, r, a, status, held_at, decided_at, decided_by, extra_text = tuple(row)
            extra = json.loads(extra_text)
            kind = "delay" if "delay" in extra else "shadow" if "shadow" in extra else "hold"
            facts.append(HeldFact(u, r, a, kind, status, parse_iso(held_at),
                                  parse_iso(decided_at) if decided_at else None, decided_by,
                                  "delay_frozen" in extra))
        return facts

    async def rolled_back_counts(self, since: datetime, until: datetime,
                                 upstream: str | None = None) -> list[RolledBack]:
        up, rule, agent = col(JournalRow.upstream), col(JournalRow.rule), col(JournalRow.agent)
        at = col(JournalRow.at)
        where = [at >= iso(since), at <= iso(until),
                 col(JournalRow.state) == JournalState.ROLLED_BACK.value,
                 col(JournalRow.decision) != "rollback"]
        if upstream is not None:
            where.append(up == upstream)
        statement = sql_select(up, rule, agent, func.count()).where(*where).group_by(up, rule,
                                                                                     agent)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [RolledBack(u, r, a, int(n)) for u, r, a, n in rows]

    async def last_audit(self, action: str) -> AuditRecord | None:
        statement = (select(AuditRow).where(col(AuditRow.action) == action)
                     .order_by(col(AuditRow.seq).desc()).limit(1))
        async with AsyncSession(self._engine) as session:
            row = (await session.exec(statement)).first()
        return None if row is None else codec.audit_from_row(row)
