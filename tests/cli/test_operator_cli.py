"""``gateway approvals|killswitch|journal`` run in process against a fake admin API on a socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.cli import main
from tests.cli.conftest import TOKEN, FakeAdmin

CALL = {
    "id": "apr_7f3a", "at": "2024-05-01T12:00:00.123456+00:00", "status": "pending",
    "agent": "support-bot", "upstream": "crm", "method": "PATCH", "path": "/customers/42",
    "query": "notify=false", "rule": "edit-customer", "required_approvals": 2,
    "approvals": [{"by": "alice", "role": "approver", "at": "2024-05-01T12:01:00+00:00",
                   "comment": "looks right"}],
    "expires_at": "2024-05-02T12:00:00+00:00", "decided_by": None, "decided_at": None,
    "reason": None, "digest": "sha256:abc123", "body": {"plan": "enterprise", "seats": 40},
    "response": None, "error": None,
}
OTHER = {**CALL, "id": "apr_9b1c", "status": "executed", "agent": "billing-bot", "method": "POST",
         "path": "/refunds", "query": "", "rule": "big-refund", "required_approvals": 1,
         "response": {"status": 201, "headers": {}, "body": {"id": "re_1"}}}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- approvals ---------------------------------------------------------------------------------

def test_approvals_list_prints_a_table(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/approvals", {"items": [CALL, OTHER]})
    code, out, err = run(capsys, "approvals", "list")
    assert (code, err) == (0, "")
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "STATUS", "AT", "AGENT", "UPSTREAM", "REQUEST", "RULE",
                              "APPROVALS", "EXPIRES"]
    assert first.split()[:2] == ["apr_7f3a", "pending"]
    assert "PATCH /customers/42?notify=false" in first and "edit-customer" in first and "1/2" in first
    assert "2024-05-01T12:00:00+00:00" in first  # to the second in tables
    assert second.split()[:2] == ["apr_9b1c", "executed"] and "POST /refunds " in second
    # fixed-width columns: every column starts at the same offset on every line
    assert header.index("STATUS") == first.index("pending") == second.index("executed")
    assert header.index("RULE") == first.index("edit-customer") == second.index("big-refund")
    assert admin.last.method == "GET" and admin.last.query == {}
    assert admin.last.headers["authorization"] == f"Bearer {TOKEN}"


def test_approvals_list_sends_filters(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/approvals", {"items": []})
    code, out, _ = run(capsys, "approvals", "list", "--status", "pending", "--agent", "support-bot",
                       "--upstream", "crm", "--limit", "5")
    assert code == 0 and out.strip() == "no held calls with status pending"
    assert admin.last.query == {"status": "pending", "agent": "support-bot", "upstream": "crm",
                                "limit": "5"}


def test_approvals_list_json(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/approvals", {"items": [CALL, OTHER]})
    code, out, _ = run(capsys, "approvals", "list", "--json")
    assert code == 0 and json.loads(out) == {"items": [CALL, OTHER]}


def test_approvals_show_prints_fields_and_changes(admin: FakeAdmin,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/approvals/apr_7f3a", {
        **CALL, "current": {"id": 42, "plan": "starter", "seats": 5},
        "changes": [{"field": "plan", "before": "starter", "after": "enterprise"},
                    {"field": "seats", "before": 5, "after": 40}]})
    code, out, _ = run(capsys, "approvals", "show", "apr_7f3a")
    assert code == 0
    assert "id:" in out and "apr_7f3a" in out and "support-bot" in out and "edit-customer" in out
    assert "PATCH /customers/42?notify=false" in out and "sha256:abc123" in out
    assert "alice (approver)" in out and "looks right" in out and "1/2" in out
    assert '"seats": 40' in out  # the body, pretty-printed
    changes = out.split("changes:")[1].strip().splitlines()
    assert changes[0].split() == ["FIELD", "BEFORE", "AFTER"]
    assert changes[1].split() == ["plan", '"starter"', "->", '"enterprise"']
    assert changes[2].split() == ["seats", "5", "->", "40"]
    assert changes[0].index("AFTER") == changes[1].index('"enterprise"') == changes[2].index("40")
    assert admin.last.method == "GET" and admin.last.path == "/v1/approvals/apr_7f3a"


def test_approvals_show_json(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    full = {**CALL, "current": None, "changes": [], "capture_error": "upstream said 500"}
    admin.on("GET", "/v1/approvals/apr_7f3a", full)
    code, out, _ = run(capsys, "approvals", "show", "apr_7f3a", "--json")
    assert code == 0 and json.loads(out) == full


def test_approvals_show_without_a_captured_state(admin: FakeAdmin,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/approvals/apr_7f3a",
             {**CALL, "current": None, "changes": [], "capture_error": "upstream said 500"})
    code, out, _ = run(capsys, "approvals", "show", "apr_7f3a")
    assert code == 0 and "upstream said 500" in out and "changes: unknown" in out


def test_approvals_show_escapes_control_characters(admin: FakeAdmin,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/approvals/apr_7f3a",
             {**CALL, "path": "/customers/\x1b[2J42", "changes": []})
    code, out, _ = run(capsys, "approvals", "show", "apr_7f3a")
    assert code == 0 and "\x1b" not in out and "\\x1b[2J42" in out


def test_approval_id_is_one_path_segment(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "approvals", "show", "../killswitch")
    assert code == 1 and "not_found" in err
    assert admin.last.path == "/v1/approvals/../killswitch" and admin.last.method == "GET"


def test_approve_sends_comment_and_digest(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/approvals/apr_7f3a/approve", {
        "id": "apr_7f3a", "status": "executed",
        "response": {"status": 200, "headers": {}, "body": {"id": 42}}})
    code, out, err = run(capsys, "approvals", "approve", "apr_7f3a", "--comment", "ok by me",
                         "--digest", "sha256:abc123")
    assert (code, err) == (0, "")
    assert "apr_7f3a: executed" in out and "upstream response: 200" in out
    assert admin.last.method == "POST" and admin.last.path == "/v1/approvals/apr_7f3a/approve"
    assert admin.last.body == {"comment": "ok by me", "digest": "sha256:abc123"}
    assert admin.last.headers["authorization"] == f"Bearer {TOKEN}"


def test_approve_without_options_sends_an_empty_object(admin: FakeAdmin,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    reply = {"id": "apr_7f3a", "status": "pending", "response": None, "required_approvals": 2,
             "approvals": CALL["approvals"] * 2}
    admin.on("POST", "/v1/approvals/apr_7f3a/approve", reply)
    code, out, _ = run(capsys, "approvals", "approve", "apr_7f3a")
    assert code == 0 and "apr_7f3a: pending (2/2 approvals)" in out
    assert admin.last.body == {}
    code, out, _ = run(capsys, "approvals", "approve", "apr_7f3a", "--json")
    assert code == 0 and json.loads(out) == reply


def test_reject_sends_the_reason(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/approvals/apr_7f3a/reject",
             {"id": "apr_7f3a", "status": "rejected", "response": None})
    code, out, _ = run(capsys, "approvals", "reject", "apr_7f3a", "--reason", "too big")
    assert code == 0 and "apr_7f3a: rejected" in out
    assert admin.last.method == "POST" and admin.last.path == "/v1/approvals/apr_7f3a/reject"
    assert admin.last.body == {"reason": "too big"}


@pytest.mark.parametrize(("argv", "path", "status", "code", "message"), [
    (["approve", "apr_7f3a"], "approve", 409, "already_decided", "approval apr_7f3a is rejected"),
    (["reject", "apr_7f3a"], "reject", 409, "already_decided", "approval apr_7f3a is executed"),
    (["approve", "apr_7f3a"], "approve", 423, "writes_frozen", "writes to crm are frozen"),
])
def test_api_errors_exit_1_with_the_message(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                            argv: list[str], path: str, status: int, code: str,
                                            message: str) -> None:
    admin.on("POST", f"/v1/approvals/apr_7f3a/{path}",
             {"error": {"code": code, "message": message}}, status=status)
    exit_code, out, err = run(capsys, "approvals", *argv)
    assert exit_code == 1 and out == ""
    assert err.strip() == f"error: {code}: {message}"


def test_unauthorized_exits_1(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/killswitch",
             {"error": {"code": "unauthenticated", "message": "bad operator token"}}, status=401)
    code, _, err = run(capsys, "killswitch", "status", "--json")
    assert code == 1 and err.strip() == "error: unauthenticated: bad operator token"


def test_error_without_the_error_shape(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/journal", "Bad Gateway from a proxy", status=502)
    code, _, err = run(capsys, "journal")
    assert code == 1 and err.strip() == "error: http_502: Bad Gateway from a proxy"


# -- configuration errors -----------------------------------------------------------------------

def test_missing_token_exits_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_TOKEN")
    code, out, err = run(capsys, "approvals", "list")
    assert code == 2 and out == "" and "GATEWAY_TOKEN" in err
    assert admin.requests == []


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A bound port nobody listens on: connecting is refused, and no other test can take it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_unreachable_admin_url_exits_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                       refused_url: str) -> None:
    code, out, err = run(capsys, "journal", "--admin-url", refused_url)
    assert code == 2 and out == ""
    assert "cannot reach the admin API" in err and refused_url in err


def test_unreachable_url_from_the_environment(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, refused_url: str) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_URL", refused_url + "/")
    code, _, err = run(capsys, "killswitch", "status")
    assert code == 2 and refused_url in err


def test_invalid_admin_url_exits_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "journal", "--admin-url", "127.0.0.1:8081")
    assert code == 2 and "invalid admin URL" in err


@pytest.mark.parametrize("argv", [
    ["approvals"],
    ["approvals", "approve"],
    ["approvals", "list", "--limit", "0"],
    ["approvals", "list", "--status", "bogus"],
    ["killswitch", "engage"],
    ["killswitch", "engage", "--reason", "x", "--upstream", "crm", "--agent", "bot"],
])
def test_usage_errors_exit_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                             argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "usage:" in capsys.readouterr().err
    assert admin.requests == []


# -- kill switch --------------------------------------------------------------------------------

FREEZES = {"engaged": True, "freezes": [
    {"scope": "global", "target": None, "reason": "incident 12", "by": "alice",
     "at": "2024-05-01T12:00:00+00:00"},
    {"scope": "upstream", "target": "crm", "reason": "bad deploy", "by": "bob",
     "at": "2024-05-01T13:00:00+00:00"}]}


def test_killswitch_status(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/killswitch", FREEZES)
    code, out, _ = run(capsys, "killswitch", "status")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "kill switch: engaged (2 freezes)"
    assert lines[1].split() == ["SCOPE", "TARGET", "REASON", "BY", "AT"]
    assert "global" in lines[2] and "incident 12" in lines[2] and "alice" in lines[2]
    assert "crm" in lines[3] and "bad deploy" in lines[3]
    assert lines[1].index("BY") == lines[2].index("alice") == lines[3].index("bob")
    code, out, _ = run(capsys, "killswitch", "status", "--json")
    assert code == 0 and json.loads(out) == FREEZES


def test_killswitch_status_released(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/killswitch", {"engaged": False, "freezes": []})
    code, out, _ = run(capsys, "killswitch", "status")
    assert code == 0 and out.startswith("kill switch: released")


@pytest.mark.parametrize(("flags", "body"), [
    ([], {"reason": "incident 12"}),
    (["--upstream", "crm"], {"reason": "incident 12", "upstream": "crm"}),
    (["--agent", "support-bot"], {"reason": "incident 12", "agent": "support-bot"}),
])
def test_killswitch_engage_sends_the_scope(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                           flags: list[str], body: dict[str, str]) -> None:
    admin.on("POST", "/v1/killswitch/engage", {**FREEZES, "freeze": FREEZES["freezes"][0]})
    code, out, _ = run(capsys, "killswitch", "engage", "--reason", "incident 12", *flags)
    assert code == 0 and out.startswith("writes frozen: ") and "engaged (2 freezes)" in out
    assert admin.last.method == "POST" and admin.last.path == "/v1/killswitch/engage"
    assert admin.last.body == body
    assert admin.last.headers["authorization"] == f"Bearer {TOKEN}"


def test_killswitch_release(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/killswitch/release",
             {"engaged": False, "freezes": [], "released": FREEZES["freezes"][1]})
    code, out, _ = run(capsys, "killswitch", "release", "--reason", "fixed", "--upstream", "crm")
    assert code == 0 and "freeze lifted: upstream crm" in out and "released" in out
    assert admin.last.body == {"reason": "fixed", "upstream": "crm"}
    admin.on("POST", "/v1/killswitch/release", {"engaged": False, "freezes": [], "released": None})
    code, out, _ = run(capsys, "killswitch", "release", "--reason", "fixed", "--agent", "bot")
    assert code == 0 and "no freeze of agent bot was engaged" in out


def test_killswitch_release_forbidden(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("POST", "/v1/killswitch/release",
             {"error": {"code": "forbidden", "message": "needs role admin"}}, status=403)
    code, _, err = run(capsys, "killswitch", "release", "--reason", "fixed")
    assert code == 1 and err.strip() == "error: forbidden: needs role admin"


# -- journal ------------------------------------------------------------------------------------

ENTRIES = {"items": [
    {"id": "jrn_2", "at": "2024-05-01T12:05:00.5+00:00", "agent": "support-bot", "run": "run-7",
     "upstream": "crm", "method": "PATCH", "path": "/customers/42", "query": "", "rule": "edit-customer",
     "decision": "allow", "status": 200, "reversible": True, "prior": {"id": 42}, "undo": None},
    {"id": "jrn_1", "at": "2024-05-01T12:00:00+00:00", "agent": "support-bot", "run": None,
     "upstream": "crm", "method": "DELETE", "path": "/customers/7", "query": "", "rule": "no-deletes",
     "decision": "deny", "status": 403, "reversible": False, "prior": None, "undo": None},
]}


def test_journal_table(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/journal", ENTRIES)
    code, out, _ = run(capsys, "journal")
    header, first, second = out.splitlines()
    assert code == 0
    assert header.split() == ["ID", "AT", "AGENT", "RUN", "UPSTREAM", "REQUEST", "RULE", "DECISION",
                              "STATUS", "REVERSIBLE"]
    assert first.split() == ["jrn_2", "2024-05-01T12:05:00+00:00", "support-bot", "run-7", "crm",
                             "PATCH", "/customers/42", "edit-customer", "allow", "200", "yes"]
    assert second.split() == ["jrn_1", "2024-05-01T12:00:00+00:00", "support-bot", "-", "crm",
                              "DELETE", "/customers/7", "no-deletes", "deny", "403", "no"]
    assert header.index("DECISION") == first.index("allow") == second.index("deny")
    assert admin.last.query == {}


def test_journal_filters_and_json(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/journal", ENTRIES)
    code, out, _ = run(capsys, "journal", "--agent", "support-bot", "--upstream", "crm", "--run", "run-7",
                       "--since", "2024-05-01T00:00:00Z", "--limit", "20", "--json")
    assert code == 0 and json.loads(out) == ENTRIES
    assert admin.last.query == {"agent": "support-bot", "upstream": "crm", "run": "run-7",
                                "since": "2024-05-01T00:00:00Z", "limit": "20"}


def test_journal_since_a_duration(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/journal", {"items": []})
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    code, out, _ = run(capsys, "journal", "--since", "2h")
    after = datetime.now(UTC) - timedelta(hours=2)
    assert code == 0 and out.strip() == "no journal entries"
    since = datetime.fromisoformat(admin.last.query["since"].replace("Z", "+00:00"))
    assert before <= since <= after
