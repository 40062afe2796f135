"""``gateway audit verify|export`` against a fake admin API on a socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.operator import audit
from tests.cli.conftest import TOKEN, FakeAdmin, Recorded, run_cli, usage_error


def record(seq: int) -> dict[str, Any]:
    return {"seq": seq, "at": f"2024-05-01T12:00:{seq % 60:02d}.000000Z", "actor": "alice",
            "action": "killswitch.engage", "detail": {"reason": f"drill {seq}", "note": "café"},
            "prev_hash": f"{seq - 1:064x}", "hash": f"{seq:064x}"}


def audit_log(admin: FakeAdmin, count: int, page: int) -> list[dict[str, Any]]:
    """Serve ``count`` records through GET /v1/audit, at most ``page`` per answer."""
    records = [record(seq) for seq in range(1, count + 1)]

    def answer(request: Recorded) -> dict[str, Any]:
        after, limit = int(request.query.get("after", 0)), int(request.query.get("limit", 1000))
        return {"items": [r for r in records if r["seq"] > after][:min(page, limit)]}

    admin.on("GET", "/v1/audit", answer)
    return records


def afters(admin: FakeAdmin) -> list[str]:
    return [r.query.get("after", "") for r in admin.requests if r.path == "/v1/audit"]


# -- verify -------------------------------------------------------------------------------------

def test_verify_ok(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/audit/verify", {"ok": True, "count": 1204, "head": "ab" * 32,
                                         "first_bad_seq": None})
    code, out, err = run_cli(capsys, "audit", "verify")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["audit chain: ok", "records:     1204", f"head:        {'ab' * 32}"]
    assert admin.last.method == "GET" and admin.last.headers["authorization"] == f"Bearer {TOKEN}"


def test_verify_broken_exits_4(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    reply = {"ok": False, "count": 57, "head": "cd" * 32, "first_bad_seq": 57}
    admin.on("GET", "/v1/audit/verify", reply)
    code, out, _ = run_cli(capsys, "audit", "verify")
    assert code == 4
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["audit chain"].strip().startswith("BROKEN")
    assert lines["first bad seq"].strip() == "57"
    assert lines["head"].strip() == f"{'cd' * 32} (the last good record)"
    assert lines["records"].strip().startswith("57")
    code, out, _ = run_cli(capsys, "audit", "verify", "--json")
    assert code == 4 and json.loads(out) == reply


def test_verify_errors_exit_1(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/audit/verify",
             {"error": {"code": "forbidden", "message": "needs role viewer"}}, status=403)
    code, out, err = run_cli(capsys, "audit", "verify")
    assert (code, out) == (1, "") and err.strip() == "error: forbidden: needs role viewer"
    admin.on("GET", "/v1/audit/verify", {"count": 3})
    code, _, err = run_cli(capsys, "audit", "verify")
    assert code == 1 and "bad_response" in err


# -- export -------------------------------------------------------------------------------------

def test_export_to_stdout_pages_until_empty(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    records = audit_log(admin, 5, page=2)
    code, out, err = run_cli(capsys, "audit", "export")
    assert code == 0
    lines = out.splitlines()
    assert [json.loads(line) for line in lines] == records  # oldest first, one record a line
    assert "café" in lines[0]  # UTF-8 as is
    assert afters(admin) == ["0", "2", "4", "5"]
    assert all(r.query["limit"] == str(audit.PAGE) for r in admin.requests)
    assert err.strip() == (f"head {records[-1]['hash']} (seq 5): publish it somewhere the gateway "
                           "cannot write")  # no progress lines when writing to stdout


def test_export_to_a_file_with_progress(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert audit.PROGRESS_EVERY == 10_000
    monkeypatch.setattr(audit, "PROGRESS_EVERY", 2)
    records = audit_log(admin, 5, page=3)
    target = tmp_path / "audit.jsonl"
    code, out, err = run_cli(capsys, "audit", "export", "--out", str(target))
    assert (code, out) == (0, "")
    assert target.read_text(encoding="utf-8").splitlines() == [
        json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records]
    assert err.splitlines() == [
        "exported 2 records (up to seq 2)", "exported 4 records (up to seq 4)",
        f"exported 5 records to {target}",
        f"head {records[-1]['hash']} (seq 5): publish it somewhere the gateway cannot write"]
    assert afters(admin) == ["0", "3", "5"]
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]


def test_export_after(admin: FakeAdmin, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    records = audit_log(admin, 4, page=10)
    target = tmp_path / "more.jsonl"
    code, _, err = run_cli(capsys, "audit", "export", "--after", "2", "--out", str(target))
    assert code == 0 and afters(admin) == ["2", "4"]
    assert [json.loads(line) for line in target.read_text().splitlines()] == records[2:]
    assert "exported 2 records" in err and "(seq 4)" in err


def test_export_nothing_new(admin: FakeAdmin, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    audit_log(admin, 3, page=10)
    code, out, err = run_cli(capsys, "audit", "export", "--after", "3")
    assert (code, out) == (0, "") and err.strip() == "no audit records after seq 3"
    target = tmp_path / "empty.jsonl"
    code, _, err = run_cli(capsys, "audit", "export", "--after", "3", "--out", str(target))
    assert code == 0 and target.read_text() == "" and "exported 0 records" in err


def test_failed_export_leaves_no_file(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    def answer(request: Recorded) -> Any:
        if request.query["after"] == "0":
            return {"items": [record(1), record(2)]}
        return 503, {"error": {"code": "unavailable", "message": "store down"}}

    admin.on("GET", "/v1/audit", answer)
    target = tmp_path / "audit.jsonl"
    target.write_text("an earlier export\n")
    code, out, err = run_cli(capsys, "audit", "export", "--out", str(target))
    assert (code, out) == (1, "") and err.strip() == "error: unavailable: store down"
    assert afters(admin) == ["0", "2"]
    assert target.read_text() == "an earlier export\n"  # untouched, and no partial file beside it
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]


def test_export_refuses_records_that_do_not_advance(admin: FakeAdmin,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    admin.on("GET", "/v1/audit", {"items": [record(1), record(2)]})  # ignores after=: would loop
    code, _, err = run_cli(capsys, "audit", "export")
    assert code == 1 and "seq 1 does not follow seq 2" in err
    assert afters(admin) == ["0", "2"]


def test_export_to_an_unwritable_place_exits_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    audit_log(admin, 1, page=10)
    code, _, err = run_cli(capsys, "audit", "export", "--out", str(tmp_path / "missing" / "a.jsonl"))
    assert code == 2 and "cannot write" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["audit"], "required"),
    (["audit", "export", "--after", "-1"], "must not be negative"),
    (["audit", "export", "--json"], "unrecognized arguments: --json"),
])
def test_audit_usage_errors_exit_2(admin: FakeAdmin, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:
    assert message in usage_error(capsys, *argv)
    assert admin.requests == []


def test_export_into_a_closed_pipe_stops_quietly(admin: FakeAdmin) -> None:
    audit_log(admin, 2000, page=500)  # far more than a pipe buffers
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "audit", "export"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["seq"] == 1
    process.stdout.close()  # like `| head -1`
    with process.stderr:
        err = process.stderr.read().decode()
    assert process.wait(30) == 141 and "Traceback" not in err
