"""What a drill is asked to do and what it saw: the values ``run`` fills in and
``report`` judges, kept apart so that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from gateway.core.rollback import Plan

UPSTREAM, AGENT, OPERATOR = "drill", "drill-agent", "drill-operator"
TRIPWIRE = "drill-bulk-writes"
VOLATILE = ("updated_at",)


@dataclass(frozen=True, slots=True)
class DrillOptions:
    out: Path = Path("./drill-reports")
    writes: int = 50
    stop: Literal["tripwire", "operator"] = "tripwire"
    base_url: str | None = None
    database_url: str | None = None
    record: bool = False  # post the report to a running gateway (its audit log keeps the times)
    admin_url: str | None = None  # that gateway's admin listener (else GATEWAY_ADMIN_URL...)


@dataclass
class AgentLog:
    sent: int = 0
    succeeded: int = 0
    stopped: int = 0  # answered 423
    other: int = 0  # any other refusal
    leaked: int = 0  # writes that went through after the first 423
    first_write: float | None = None  # epoch seconds
    first_423: float | None = None
    stopped_by: dict[str, Any] | None = None
    error: str | None = None
    edited: dict[str, str] = field(default_factory=dict)  # id -> last successful method


@dataclass(frozen=True, slots=True)
class Findings:
    """What a drill saw; ``gateway.drill.report.build`` judges it and makes the report."""

    options: DrillOptions
    started_at: datetime
    run: str
    tripwire_limit: int | None
    base_url: str
    proxy_url: str
    initial: dict[str, dict[str, Any]]
    final: dict[str, dict[str, Any]]
    agent: AgentLog
    freeze: dict[str, Any] | None  # as GET /v1/killswitch shows it
    plan: Plan
    restore_ms: float
    journaled: int
    audit: dict[str, Any]  # GET /v1/audit/verify
    steps: list[dict[str, Any]]
    total_ms: float
