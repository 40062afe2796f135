"""``gateway drill`` end to end: a demo CRM or a sandbox, a real gateway, real sockets.

Each test runs a whole drill in this process (about a second) and reads the
report it saved. The sabotaged run proves the verdict can fail: a person
edits, at the upstream, a customer the agent changed, before the rollback.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as cli_main
from gateway.demo.crm import create_app
from gateway.drill import DrillContext, DrillOptions, amain
from tests.harness import serve_app


def report_of(out: Path) -> tuple[dict[str, Any], str]:
    """The one JSON report in ``out``, parsed, and its Markdown twin."""
    reports = sorted(out.glob("drill-*.json"))
    assert len(reports) == 1, list(out.iterdir())
    markdown = reports[0].with_suffix(".md")
    assert markdown.is_file()
    return json.loads(reports[0].read_text()), markdown.read_text()


def assert_passed(report: dict[str, Any], markdown: str) -> None:
    assert report["verdict"] == "PASS", report["checks"]
    assert report["final_equals_initial"] is True
    assert report["changes_lost"] == 0
    for phase in ("detect", "stop", "restore", "total"):
        assert report["timings_ms"][phase] > 0, (phase, report["timings_ms"])
    counts = report["counts"]
    assert counts["writes_through"] >= 1
    assert counts["writes_stopped"] >= 1  # the agent saw 423
    assert counts["writes_after_stop"] == 0
    assert counts["undone"] == counts["writes_through"]
    # a write journaled just before an operator's freeze is refused at the final check
    assert counts["journaled"] == counts["writes_through"] + counts["nothing_to_undo"]
    assert counts["conflicts"] == counts["failed"] == counts["irreversible"] == 0
    assert report["audit"]["ok"] is True
    assert report["differences"] == []
    assert markdown.startswith("# Gateway drill: PASS")
    assert "| detect | first bad write -> freeze engaged |" in markdown
    assert "## Steps" in markdown


def test_tripwire_drill_passes_and_saves_both_reports(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports"
    assert cli_main(["drill", "--out", str(out), "--writes", "30"]) == 0
    report, markdown = report_of(out)
    assert_passed(report, markdown)
    assert report["setup"]["tripwire"]["limit"] == 6  # writes / 5
    assert report["counts"]["writes_through"] == 6  # the 7th tripped it
    assert report["freeze"]["by"] == "tripwire:drill-bulk-writes"
    assert report["stopped_by"]["code"] == "writes_frozen"
    printed = capsys.readouterr().out
    assert "drill: [" in printed  # progress lines
    assert "gateway drill: PASS (stop by tripwire" in printed


def test_operator_drill_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["drill", "--out", str(tmp_path), "--writes", "30",
                     "--stop", "operator"]) == 0
    report, markdown = report_of(tmp_path)
    assert_passed(report, markdown)
    assert report["setup"]["tripwire"] is None
    assert report["freeze"]["by"] == "drill-operator"
    assert any(s["step"] == "operator detects" for s in report["steps"])
    assert "gateway drill: PASS (stop by operator" in capsys.readouterr().out


async def test_a_human_edit_before_the_rollback_is_a_conflict_and_fails(tmp_path: Path) -> None:
    edited: list[str] = []

    async def human_edit(ctx: DrillContext) -> None:
        assert ctx.changed, "the agent changed no initial customer"
        customer = ctx.changed[0]
        response = await ctx.upstream.patch(f"/customers/{customer}",
                                            json={"name": "Edited by a person"})
        assert response.status_code == 200
        edited.append(customer)

    lines: list[str] = []
    code = await amain(DrillOptions(out=tmp_path, writes=30), before_rollback=human_edit,
                       echo=lines.append)
    assert code == 1
    report, markdown = report_of(tmp_path)
    assert report["verdict"] == "FAIL"
    assert report["final_equals_initial"] is False
    assert report["changes_lost"] >= 1
    assert report["counts"]["conflicts"] >= 1
    conflicts = report["rollback"]["conflicts"]
    assert conflicts and all("changed since the agent's write" in c["detail"] for c in conflicts)
    # the person's edit and the agent's change under it both stay: a conflict is left alone
    [differs] = report["differences"]
    assert differs["id"] == edited[0] and "name" in differs["fields"]
    assert [c["check"] for c in report["checks"] if not c["ok"]] == [
        "final state equals initial (updated_at ignored)", "no journaled write lost"]
    assert markdown.startswith("# Gateway drill: FAIL")
    assert "**FAILED**" in markdown and "| conflict |" in markdown
    assert any("gateway drill: FAIL" in line for line in lines)


async def test_a_sandbox_given_by_base_url_is_restored(tmp_path: Path) -> None:
    sandbox = create_app()
    before = {cid: {k: v for k, v in item.items() if k != "updated_at"}
              for cid, item in sandbox.data["customers"].items()}
    async with serve_app(sandbox) as url:
        code = await amain(DrillOptions(out=tmp_path, writes=20, base_url=url + "/"),
                           echo=lambda line: None)
    assert code == 0
    report, markdown = report_of(tmp_path)
    assert_passed(report, markdown)
    assert report["setup"]["upstream_kind"] == "sandbox"
    after = {cid: {k: v for k, v in item.items() if k != "updated_at"}
             for cid, item in sandbox.data["customers"].items()}
    assert after == before
    writes = [r for r in sandbox.log if r["method"] != "GET"]
    assert len(writes) == 2 * report["counts"]["writes_through"]  # the agent's, then the undos


@pytest.mark.parametrize("stop", ["tripwire", "operator"])
async def test_the_drill_runs_on_a_given_store(tmp_path: Path, store_url: str,
                                               stop: str) -> None:
    """On a store other processes share, what the drill journals is audited as any
    process's writes: recovery (``unaudited``: a record lost in a failover, or with a
    dead process) finds no entry of the drill's without a record naming it, so it
    appends no spurious "recovered" record (its compensations are the rollback's)."""
    from sqlalchemy import text

    from gateway.store.sql import open_store
    # the operator polls the journal on the agent's own loop and engages at 1 in 5 writes:
    # 40 writes leave it room to do so before the agent is done, on a loaded machine too
    code = await amain(DrillOptions(out=tmp_path, writes=10 if stop == "tripwire" else 40,
                                    database_url=store_url, stop=stop),
                       echo=lambda line: None)  # type: ignore[arg-type]
    assert code == 0
    report, _ = report_of(tmp_path)
    assert report["verdict"] == "PASS"
    assert report["options"]["database"] != "temporary SQLite"
    store = open_store(store_url)
    await store.start()
    try:
        async with store._engine.connect() as connection:
            processes = (await connection.execute(text(
                "SELECT DISTINCT process FROM journal WHERE run = :run"),
                {"run": report["setup"]["run"]})).scalars().all()
        assert len(processes) == 1, processes  # the drill's: its writes and compensations
        assert await store.unaudited(processes[0]) == []
    finally:
        await store.close()


async def test_an_unreachable_sandbox_cannot_run(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lines: list[str] = []
    code = await amain(DrillOptions(out=tmp_path, base_url=f"http://127.0.0.1:{port}"),
                       echo=lines.append)
    assert code == 2
    assert "cannot run" in lines[-1] and "customers" in lines[-1]
    assert not tmp_path.joinpath("drill-reports").exists() and not list(tmp_path.iterdir())


def test_writes_must_be_at_least_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["drill", "--writes", "1"])
    assert exit_.value.code == 2
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_the_report_names_a_multi_host_store_without_its_password(
        tmp_path: Path, store_url: str) -> None:
    """A primary and its standby (issue 21's multi-host URL), the password in the user
    part and in the query: the report names the store, hosts and all, and neither."""
    from sqlalchemy.engine import make_url
    url = make_url(store_url)
    host = f"{url.host}:{url.port or 5432}"
    given = (f"postgresql+asyncpg://{url.username}:s3cret-pw@{host},{host}/{url.database}"
             "?sslpassword=s3cret-ssl")
    code = await amain(DrillOptions(out=tmp_path, writes=10, database_url=given),
                       echo=lambda line: None)
    report, markdown = report_of(tmp_path)
    assert code == 0, report
    shown = report["options"]["database"]
    at = host.replace(":", "%3A")
    assert shown == (f"postgresql+asyncpg://{url.username}:***@/{url.database}"
                     f"?host={at}&host={at}&sslpassword=***")
    assert "s3cret" not in json.dumps(report) + markdown
