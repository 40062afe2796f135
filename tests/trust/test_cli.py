"""Bad input to the CLI (issue 17 item 15): one clear line on stderr and exit 1, never
a traceback. Real ``gateway`` processes, with no terminal on stdin."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.procs import GATEWAY, write_settings
from tests.harness import CRM_RULES, policy_text

ROWS = [
    # (row id, arguments ("{config}": a valid settings file), what the line names)
    ("database-url-not-a-url", ["serve", "--config", "{config}", "--database-url", "not a url"],
     "--database-url"),
    ("database-url-unknown-driver", ["serve", "--config", "{config}", "--database-url",
                                     "nosuchdb://x/y"], "--database-url"),
    ("hash-without-a-secret-or-a-terminal", ["hash"], "gateway hash SECRET"),
]


@pytest.mark.parametrize(("args", "names"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], names: str) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text("http://127.0.0.1:9", CRM_RULES))
    config = write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db")
    result = subprocess.run([*GATEWAY, *(a.format(config=config) for a in args)],
                            capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0] and "Traceback" not in result.stderr
