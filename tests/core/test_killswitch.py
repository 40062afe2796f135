"""Kill-switch scopes: which freeze, if any, stops a write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.killswitch import covering, covers, scope_of
from gateway.core.model import Freeze, FreezeScope

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def freeze(scope: str, target: str | None = None) -> Freeze:
    return Freeze(FreezeScope(scope), target, f"{scope} {target}", "alice", AT, id=f"{scope}-{target}")


GLOBAL = freeze("global")
CRM = freeze("upstream", "crm")
BILLING = freeze("upstream", "billing")
BOT = freeze("agent", "bot")


@pytest.mark.parametrize(("frozen", "upstream", "agent", "covered"), [
    (GLOBAL, "crm", "bot", True),
    (GLOBAL, "anything", "anyone", True),
    (CRM, "crm", "bot", True),
    (CRM, "crm", "other", True),
    (CRM, "billing", "bot", False),
    (CRM, "crm-2", "bot", False),          # exact names, not prefixes
    (BOT, "crm", "bot", True),
    (BOT, "billing", "bot", True),
    (BOT, "crm", "bot-2", False),
    (BOT, "bot", "other", False),          # an agent freeze does not name an upstream
    (freeze("upstream", "bot"), "crm", "bot", False),  # nor an upstream freeze an agent
])
def test_covers(frozen: Freeze, upstream: str, agent: str, covered: bool) -> None:
    assert covers(frozen, upstream, agent) is covered


@pytest.mark.parametrize(("freezes", "upstream", "agent", "expected"), [
    ([], "crm", "bot", None),
    ([BILLING], "crm", "bot", None),
    ([CRM], "crm", "bot", CRM),
    ([BOT], "crm", "bot", BOT),
    # precedence: global, then upstream, then agent, whatever the order given
    ([BOT, CRM, GLOBAL], "crm", "bot", GLOBAL),
    ([BOT, CRM], "crm", "bot", CRM),
    ([CRM, BOT], "crm", "bot", CRM),
    ([BOT, BILLING], "crm", "bot", BOT),
    ([BILLING, GLOBAL], "crm", "other", GLOBAL),
    ([BOT, BILLING, CRM], "billing", "other", BILLING),
])
def test_covering(freezes: list[Freeze], upstream: str, agent: str,
                  expected: Freeze | None) -> None:
    assert covering(freezes, upstream, agent) is expected


def test_covering_accepts_any_iterable() -> None:
    assert covering(iter([BOT, CRM]), "crm", "bot") is CRM


@pytest.mark.parametrize(("upstream", "agent", "expected"), [
    (None, None, (FreezeScope.GLOBAL, None)),
    ("crm", None, (FreezeScope.UPSTREAM, "crm")),
    (None, "bot", (FreezeScope.AGENT, "bot")),
])
def test_scope_of(upstream: str | None, agent: str | None,
                  expected: tuple[FreezeScope, str | None]) -> None:
    assert scope_of(upstream, agent) == expected


def test_scope_of_both_is_an_error() -> None:
    with pytest.raises(ValueError, match="not both"):
        scope_of("crm", "bot")


def test_freeze_json() -> None:
    assert CRM.to_json() == {"scope": "upstream", "target": "crm", "reason": "upstream crm",
                             "by": "alice", "at": "2024-05-01T12:00:00.000000Z"}


# An empty name is not "no name": {"upstream": ""} on release must not lift the global freeze.
@pytest.mark.parametrize(("upstream", "agent"), [("", None), (None, ""), ("", "")])
def test_scope_of_an_empty_name_is_an_error(upstream: str | None, agent: str | None) -> None:
    with pytest.raises(ValueError):
        scope_of(upstream, agent)
