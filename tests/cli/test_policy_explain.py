"""``gateway policy explain DIR`` and the warnings and problems of ``policy check``
(issue 8): the operator's map of what an agent can change and whether it can be undone."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
ENV = ("STRIPE_API_KEY", "GITHUB_TOKEN", "HUBSPOT_ACCESS_TOKEN", "ZENDESK_OAUTH_TOKEN",
       "OPENAI_API_KEY", "SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
UNDOABLE = """\
upstream: billing
base_url: http://127.0.0.1:9
credentials: {basic: {username: "${BILLING_USER}", password: "${BILLING_PASSWORD}"}}
rules:
  - {id: read, match: {methods: [GET]}, action: allow}
  - {id: update-no-capture, match: {methods: [POST], path: "/v1/customers/{id}"}, action: allow}
  - {id: create, match: {methods: [POST], path: "/v1/customers"}, action: allow}
  - {id: edit, match: {methods: [PATCH], path: "/v1/customers/{id}"}, action: allow}
  - {id: wipe, match: {methods: [DELETE], path: "/v1/customers/{id}"}, action: hold, undo: none}
  - {id: get-that-writes, match: {methods: [GET], path: "/v1/uninstall"}, action: allow,
     effect: write, undo: none}
  - {id: post-that-reads, match: {methods: [POST], path: "/v1/search"}, action: allow,
     effect: read}
"""


@pytest.fixture
def billing(tmp_path: Path) -> Path:
    (tmp_path / "billing.yaml").write_text(UNDOABLE)
    return tmp_path


@pytest.mark.parametrize(("rule", "tier", "reversibility"), [
    ("read", "read", "-"),
    ("update-no-capture", "write", "irreversible"),
    ("create", "write", "reversible with reconciliation"),
    ("edit", "write", "reversible"),
    ("wipe", "destructive", "irreversible"),
    ("get-that-writes", "write", "irreversible"),  # effect: write, as policy init writes
    ("post-that-reads", "read", "-"),
])
def test_explain_prints_tier_and_reversibility_per_rule(
        billing: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        rule: str, tier: str, reversibility: str) -> None:
    monkeypatch.setenv("BILLING_USER", "u")
    monkeypatch.setenv("BILLING_PASSWORD", "p")
    assert main(["policy", "explain", str(billing)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:5] == ["UPSTREAM", "RULE", "ACTION", "TIER", "CAPTURE"]
    column = out.splitlines()[0].index("REVERSIBILITY")
    line = next(line for line in out.splitlines() if line.split()[1:2] == [rule])
    assert line.split()[3] == tier
    shown = line[column:].rstrip()
    assert shown == reversibility or shown.startswith(f"{reversibility} ("), shown


def test_check_warns_where_an_undo_cannot_be_inferred(
        billing: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BILLING_USER", "u")
    monkeypatch.setenv("BILLING_PASSWORD", "billing-password")  # not too short to hide
    assert main(["policy", "check", str(billing)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if ": warning: " in line]
    assert len(warnings) == 1
    assert "rule 'update-no-capture': a POST to an item path without a capture" in warnings[0]
    assert out.splitlines()[-1].startswith("ok: 1 file(s)")


def test_an_unset_variable_fails_check(billing: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BILLING_USER", raising=False)
    monkeypatch.setenv("BILLING_PASSWORD", "p")
    assert main(["policy", "check", str(billing)]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [
        f"{billing / 'billing.yaml'}:3: credentials: ${{BILLING_USER}} is not set in the environment"]


def test_every_example_is_explained(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for name in ENV:
        monkeypatch.setenv(name, "x")
    assert main(["policy", "explain", str(EXAMPLES)]) == 0
    upstreams = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert upstreams == {"github", "hubspot", "openai", "s3", "slack", "stripe", "zendesk"}
