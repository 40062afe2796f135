"""``gateway rollback`` (plan, apply, list, show, resume) against a fake admin API on a socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.operator.rollback import APPLY_TIMEOUT
from tests.cli.conftest import TOKEN, FakeAdmin, run_cli, usage_error

SELECTOR = {"entries": None, "agent": None, "run": "run-7", "upstream": None, "since": None,
            "until": None}


def step(seq: int, entry: str, method: str, path: str, status: str = "planned",
         detail: str | None = None) -> dict[str, Any]:
    return {"seq": seq, "entry": entry, "upstream": "crm", "method": method, "path": path,
            "body": {"plan": "starter"}, "content_type": "application/json", "status": status,
            "detail": detail, "journal_id": None}


IRREVERSIBLE = {"entry": "jrn_0", "at": "2024-05-01T11:00:00.000000Z", "agent": "support-bot",
                "run": "run-7", "upstream": "mail", "method": "POST", "path": "/messages",
                "status": 202, "rule": "send-mail", "reason": "marked irreversible (undo: none)",
                "prior": None, "request_body": {"to": "a@b.c"}, "response_body": None}


def plan(status: str = "dry_run", steps: list[dict[str, Any]] | None = None,
         irreversible: list[dict[str, Any]] | None = None, force: bool = False,
         selector: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = steps if steps is not None else [step(0, "jrn_2", "PUT", "/customers/42"),
                                             step(1, "jrn_1", "DELETE", "/customers/43")]
    return {"id": "rb_5e1f", "created_at": "2024-05-01T12:10:00.123456Z", "by": "alice",
            "selector": selector or SELECTOR, "force": force, "status": status, "steps": steps,
            "irreversible": irreversible or [],
            "conflicts": [s for s in steps if s["status"] == "conflict"]}


def section(out: str, title: str) -> list[str]:
    """The lines of the block that starts with ``title``, up to the next empty line."""
    block = out.split("\n" + title, 1)[1].split("\n\n", 1)[0]
    return block.splitlines()[1:]


# -- planning and applying ----------------------------------------------------------------------

def test_dry_run_by_default(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback", {"plan": plan()})
    code, out, err = run_cli(capsys, "rollback", "--run", "run-7")
    assert (code, err) == (0, "")
    assert admin.last.method == "POST" and admin.last.path == "/v1/rollback"
    assert admin.last.body == {"run": "run-7", "dry_run": True, "force": False}
    assert admin.last.headers["authorization"] == f"Bearer {TOKEN}"
    assert out.startswith("DRY RUN")
    assert "rb_5e1f" in out and "dry_run" in out and "run=run-7" in out
    assert "2024-05-01T12:10:00Z" in out  # to the second
    header, first, second = section(out, "steps (2")
    assert header.split() == ["SEQ", "ENTRY", "UPSTREAM", "METHOD", "PATH", "STATUS", "DETAIL"]
    assert first.split() == ["0", "jrn_2", "crm", "PUT", "/customers/42", "planned", "-"]
    assert second.split() == ["1", "jrn_1", "crm", "DELETE", "/customers/43", "planned", "-"]
    assert header.index("STATUS") == first.index("planned") == second.index("planned")
    assert "irreversible" not in out and "conflicts: none" in out
    assert out.rstrip().splitlines()[-1] == "to apply: gateway rollback --run run-7 --apply"


def test_dry_run_with_conflicts_exits_3(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    steps = [step(0, "jrn_2", "PUT", "/customers/42", "conflict", "changed since the agent's write: plan"),
             step(1, "jrn_1", "DELETE", "/customers/43")]
    admin.on("POST", "/v1/rollback", {"plan": plan(steps=steps)})
    code, out, _ = run_cli(capsys, "rollback", "--run", "run-7")
    assert code == 3 and out.startswith("DRY RUN")
    first = section(out, "steps (2")[1]
    assert "conflict" in first and first.endswith("changed since the agent's write: plan")
    assert ("conflicts: 1 step (seq 0) changed since the agent's write, would be left alone; "
            "--force overwrites them") in out
    assert "to apply: gateway rollback --run run-7 --apply" in out


def test_dry_run_json_keeps_the_exit_code(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    reply = {"plan": plan(steps=[step(0, "jrn_2", "PUT", "/customers/42", "conflict", "changed")])}
    admin.on("POST", "/v1/rollback", reply)
    code, out, _ = run_cli(capsys, "rollback", "--run", "run-7", "--json")
    assert code == 3 and json.loads(out) == reply  # nothing but the API's JSON on stdout


def test_apply_sends_every_selector(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    done = [step(0, "jrn_2", "PUT", "/customers/42", "applied"),
            step(1, "jrn_1", "DELETE", "/customers/43", "skipped", "already absent")]
    admin.on("POST", "/v1/rollback", {"plan": plan("done", done, force=True)})
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    code, out, err = run_cli(capsys, "rollback", "--entries", "jrn_1", "jrn_2", "--entries", "jrn_3",
                             "--agent", "support-bot", "--run", "run-7", "--upstream", "crm",
                             "--since", "2024-05-01T00:00:00Z", "--until", "30m", "--apply", "--force")
    after = datetime.now(UTC) - timedelta(minutes=30)
    assert (code, err) == (0, "")
    body = admin.last.body
    until = datetime.fromisoformat(body.pop("until").replace("Z", "+00:00"))
    assert before <= until <= after
    assert body == {"entries": ["jrn_1", "jrn_2", "jrn_3"], "agent": "support-bot", "run": "run-7",
                    "upstream": "crm", "since": "2024-05-01T00:00:00Z", "dry_run": False,
                    "force": True}
    assert "DRY RUN" not in out and "to apply" not in out and "to plan those again" not in out
    steps = section(out, "steps (2")
    assert "applied" in steps[1] and "skipped" in steps[2] and "already absent" in steps[2]
    assert "conflicts: none" in out


def test_apply_with_failures_exits_3_and_says_how_to_retry(admin: FakeAdmin,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    steps = [step(0, "jrn_3", "PUT", "/customers/42", "applied"),
             step(1, "jrn_2", "PUT", "/customers/44", "conflict", "changed since the agent's write"),
             step(2, "jrn_1", "DELETE", "/customers/43", "failed", "the compensation answered 500")]
    admin.on("POST", "/v1/rollback", {"plan": plan("incomplete", steps)})
    code, out, _ = run_cli(capsys, "rollback", "--run", "run-7", "--apply")
    assert code == 3 and admin.last.body == {"run": "run-7", "dry_run": False, "force": False}
    assert "incomplete" in out and "the compensation answered 500" in out
    assert "conflicts: 1 step (seq 1) changed since the agent's write, left alone;" in out
    assert "failed: 1 step (seq 2)" in out
    assert out.rstrip().splitlines()[-1] == "to plan those again: gateway rollback --entries jrn_2 jrn_1"


def test_irreversible_entries_exit_3_even_when_done(admin: FakeAdmin,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback", {"plan": plan(
        "done", [step(0, "jrn_2", "PUT", "/customers/42", "applied")], [IRREVERSIBLE])})
    code, out, _ = run_cli(capsys, "rollback", "--run", "run-7", "--apply")
    assert code == 3
    header, row = section(out, "irreversible (1")
    assert header.split() == ["ENTRY", "UPSTREAM", "METHOD", "PATH", "REASON"]
    assert row.split()[:4] == ["jrn_0", "mail", "POST", "/messages"]
    assert row.endswith("marked irreversible (undo: none)")
    assert header.index("REASON") == row.index("marked")


def test_nothing_reversible(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback", {"plan": plan(steps=[], irreversible=[IRREVERSIBLE])})
    code, out, _ = run_cli(capsys, "rollback", "--entries", "jrn_0")
    assert code == 3 and "steps: none" in out and "irreversible (1" in out


def test_dry_run_apply_hint_quotes_and_keeps_the_admin_url(admin: FakeAdmin,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    selector = {**SELECTOR, "run": "run 7", "since": "2024-05-01T10:00:00.000000Z"}
    admin.on("POST", "/v1/rollback", {"plan": plan(selector=selector, force=True)})
    code, out, _ = run_cli(capsys, "rollback", "--run", "run 7", "--since", "2h", "--force",
                           "--admin-url", admin.url)
    assert code == 0 and admin.last.body["force"] is True and admin.last.body["dry_run"] is True
    assert "selector:" in out and "run=run 7 since=2024-05-01T10:00:00.000000Z" in out
    # the times the server resolved, not "2h" again: apply selects what the dry run showed
    assert (f"to apply: gateway rollback --admin-url {admin.url} --run 'run 7' "
            "--since 2024-05-01T10:00:00.000000Z --force --apply") in out


def test_rollback_escapes_control_characters(admin: FakeAdmin,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback", {"plan": plan(steps=[
        step(0, "jrn_2", "PUT", "/customers/\x1b[2J42", "conflict", "changed: \x07name")])})
    code, out, _ = run_cli(capsys, "rollback", "--run", "run-7")
    assert code == 3 and "\x1b" not in out and "\x07" not in out and "\\x1b[2J42" in out


@pytest.mark.parametrize(("status", "code", "message"), [
    (403, "forbidden", "needs role admin"),
    (404, "not_found", "no journal entries ['jrn_9']"),
    (400, "bad_request", "since must be an ISO-8601 time"),
])
def test_rollback_api_errors_exit_1(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                    status: int, code: str, message: str) -> None:
    admin.on("POST", "/v1/rollback", {"error": {"code": code, "message": message}}, status=status)
    exit_code, out, err = run_cli(capsys, "rollback", "--entries", "jrn_9", "--apply")
    assert (exit_code, out) == (1, "") and err.strip() == f"error: {code}: {message}"


def test_answer_without_a_plan_exits_1(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback", {"items": []})
    code, _, err = run_cli(capsys, "rollback", "--run", "run-7")
    assert code == 1 and "bad_response" in err


def test_apply_waits_longer_than_other_calls() -> None:
    assert APPLY_TIMEOUT.read is not None and APPLY_TIMEOUT.read >= 600


# -- list, show, resume -------------------------------------------------------------------------

def test_list(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    other = {**plan("incomplete", [step(0, "jrn_9", "PUT", "/x", "conflict", "changed")],
                    [IRREVERSIBLE]),
             "id": "rb_0a0a", "selector": {**SELECTOR, "run": None, "entries": ["jrn_9", "jrn_0"]}}
    admin.on("GET", "/v1/rollback", {"items": [plan("done"), other]})
    code, out, _ = run_cli(capsys, "rollback", "list", "--limit", "5")
    assert code == 0 and admin.last.query == {"limit": "5"}
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "CREATED", "BY", "STATUS", "STEPS", "CONFLICTS", "IRREVERSIBLE",
                              "SELECTOR"]
    assert first.split() == ["rb_5e1f", "2024-05-01T12:10:00Z", "alice", "done", "2", "0", "0",
                             "run=run-7"]
    assert second.split() == ["rb_0a0a", "2024-05-01T12:10:00Z", "alice", "incomplete", "1", "1", "1",
                              "entries=jrn_9,jrn_0"]
    assert header.index("SELECTOR") == first.index("run=") == second.index("entries=")


def test_list_empty_and_json(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/rollback", {"items": []})
    code, out, _ = run_cli(capsys, "rollback", "list")
    assert code == 0 and out.strip() == "no rollback plans" and admin.last.query == {}
    admin.on("GET", "/v1/rollback", {"items": [plan()]})
    code, out, _ = run_cli(capsys, "rollback", "list", "--json")
    assert code == 0 and json.loads(out) == {"items": [plan()]}


def test_show(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/rollback/rb_5e1f", {"plan": plan("done", [
        step(0, "jrn_2", "PUT", "/customers/42", "applied")])})
    code, out, _ = run_cli(capsys, "rollback", "show", "rb_5e1f")
    assert code == 0 and admin.last.method == "GET" and admin.last.body is None
    assert "rb_5e1f" in out and "done" in out and "applied" in out and "DRY RUN" not in out


def test_show_a_dry_run_tells_how_to_apply(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/rollback/rb_5e1f", {"plan": plan()})
    code, out, _ = run_cli(capsys, "rollback", "show", "rb_5e1f")
    assert code == 0 and out.startswith("DRY RUN")
    assert "to apply: gateway rollback --run run-7 --apply" in out


def test_json_before_the_sub_command_is_kept(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/rollback/rb_5e1f", {"plan": plan()})
    code, out, _ = run_cli(capsys, "rollback", "--json", "show", "rb_5e1f")
    assert code == 0 and json.loads(out) == {"plan": plan()}


def test_show_unknown_plan_exits_1(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "rollback", "show", "rb/../x")
    assert code == 1 and "not_found" in err
    assert admin.last.path == "/v1/rollback/rb/../x"  # one quoted segment, decoded by the server


def test_resume(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback/rb_5e1f/resume", {"plan": plan("done", [
        step(0, "jrn_2", "PUT", "/customers/42", "applied", "found applied when the plan resumed")])})
    code, out, _ = run_cli(capsys, "rollback", "resume", "rb_5e1f")
    assert code == 0 and admin.last.method == "POST" and "found applied when the plan resumed" in out
    admin.on("POST", "/v1/rollback/rb_5e1f/resume", {"plan": plan("incomplete", [
        step(0, "jrn_2", "PUT", "/customers/42", "failed", "reading failed: timeout")])})
    code, out, _ = run_cli(capsys, "rollback", "resume", "rb_5e1f")
    assert code == 3 and "failed: 1 step (seq 0)" in out


def test_resume_a_dry_run_exits_1(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/rollback/rb_5e1f/resume", {"error": {
        "code": "dry_run", "message": "a dry run is not applied"}}, status=409)
    code, out, err = run_cli(capsys, "rollback", "resume", "rb_5e1f", "--json")
    assert (code, out) == (1, "") and err.strip() == "error: dry_run: a dry run is not applied"


# -- usage --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["rollback"], "name what to roll back"),
    (["rollback", "--apply"], "name what to roll back"),
    (["rollback", "--run", "run-7", "show", "rb_5e1f"], "takes no --run"),
    (["rollback", "--apply", "resume", "rb_5e1f"], "takes no --apply"),
    (["rollback", "show", "rb_5e1f", "--force"], "unrecognized arguments: --force"),
    (["rollback", "show"], "required: id"),
    (["rollback", "jrn_1"], "invalid choice"),
    (["rollback", "--entries"], "expected at least one argument"),
    (["rollback", "list", "--limit", "0"], "must be at least 1"),
])
def test_rollback_usage_errors_exit_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                      argv: list[str], message: str) -> None:
    assert message in usage_error(capsys, *argv)
    assert admin.requests == []


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(capsys, "rollback", "--help")
    out = capsys.readouterr().out
    assert "gateway rollback [--entries ID ...]" in out and "{list [--limit N] | show PLAN_ID" in out
    assert "exit status:" in out and "3  the plan has conflicts, failed steps or irreversible" in out
