"""``gateway policy init --openapi SPEC``: files in, a checked policy out, one line on error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main

SPEC = {
    "openapi": "3.0.3", "info": {"title": "Notes"},
    "servers": [{"url": "https://notes.test/api"}],
    "paths": {
        "/notes": {"get": {"operationId": "listNotes"}, "post": {"operationId": "createNote"}},
        "/notes/{id}": {"get": {"operationId": "getNote"},
                        "put": {"operationId": "replaceNote"},
                        "delete": {"operationId": "deleteNote"}},
        "/notes/{id}/publish": {"post": {"operationId": "publishNote"}},
    },
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "policy", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_init_writes_a_policy_that_check_accepts(tmp_path: Path, suffix: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / f"notes{suffix}"
    spec.write_text(json.dumps(SPEC) if suffix == ".json" else yaml.safe_dump(SPEC))
    out = tmp_path / "policies"
    assert main(["policy", "init", "--openapi", str(spec), "--upstream", "notes",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == ("6 operations: 2 reads, 4 writes (3 with capture, 3 with undo, "
                               f"1 irreversible); wrote {out / 'notes.yaml'}")
    policy = yaml.safe_load((out / "notes.yaml").read_text())
    assert policy["base_url"] == "https://notes.test/api" and policy["default"] == "deny"
    assert main(["policy", "check", str(out)]) == 0
    assert "ok: 1 file(s), 1 upstream(s) (notes)" in capsys.readouterr().out


def test_init_json_summary_and_base_url(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "notes.json"
    spec.write_text(json.dumps({**SPEC, "servers": [{"url": "/relative"}]}))
    assert main(["policy", "init", "--openapi", str(spec), "--upstream", "notes",
                 "--out", str(tmp_path), "--json"]) == 1
    assert "names no absolute server URL; pass --base-url" in capsys.readouterr().err
    assert main(["policy", "init", "--openapi", str(spec), "--upstream", "notes",
                 "--out", str(tmp_path), "--json", "--base-url", "http://127.0.0.1:9/x"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"operations": 6, "reads": 2, "writes": 4, "captured": 3, "undoable": 3,
                       "irreversible": 1, "file": str(tmp_path / "notes.yaml")}
    assert "base_url: \"http://127.0.0.1:9/x\"" in (tmp_path / "notes.yaml").read_text()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.yaml", "openapi: 3.0.0\npaths: {a: [\n", "bad.yaml:3: invalid YAML"),
    ("bad.json", '{"openapi": "3.0.0",', "invalid JSON"),
    ("list.yaml", "- a\n- b\n", "the document is not a mapping"),
    ("v1.json", '{"swagger": "1.2", "paths": {}}', "unsupported description version '1.2'"),
    ("bin.yaml", None, "cannot read"),
    ("deep.json", '{"a":' * 100000 + "1" + "}" * 100000, "nested too deeply"),
    ("deep.yaml", "[" * 100000 + "]" * 100000, "exceeded maximum nesting depth"),
])
def test_a_malformed_description_is_one_line(tmp_path: Path, name: str, text: str | None,
                                             message: str) -> None:
    spec = tmp_path / name
    if text is None:
        spec.write_bytes(b"\xff\xfe\x00garbage")
    else:
        spec.write_text(text)
    result = _run("init", "--openapi", str(spec), "--upstream", "x", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("gateway policy init: ")
    assert not (tmp_path / "x.yaml").exists()


def test_a_missing_file_and_a_bad_upstream_name(tmp_path: Path) -> None:
    result = _run("init", "--openapi", str(tmp_path / "nope.json"), "--upstream", "x")
    assert result.returncode == 1 and "cannot read: No such file" in result.stderr
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    result = _run("init", "--openapi", str(spec), "--upstream", "Bad_Name")
    assert result.returncode == 1
    assert result.stderr.strip() == ("gateway policy init: upstream name 'Bad_Name' must match "
                                     "[a-z0-9][a-z0-9-]*")
