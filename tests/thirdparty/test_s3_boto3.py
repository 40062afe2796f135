"""Rollback of S3 object writes made with boto3, through ``gateway serve``, on moto's server.

The agent is boto3's S3 client with ``endpoint_url`` = the gateway's proxy URL
+ ``/s3`` and path-style addressing, so ``put_object`` is ``PUT /s3/{bucket}/{key}``.
It signs every request (SigV4, its gateway key as the access key id: the
gateway reads its identity there) for the gateway's host and sends
``Expect: 100-continue`` with bodies; over plain HTTP it sends whole bodies
with an ``x-amz-checksum-crc32`` header, not aws-chunked ones. The run rides
in a header added after signing (the gateway strips it).

S3 answers a write with an empty body, so the drift check compares a read
made after the write; deleting is undone by PUT (S3 has no POST to a
"collection"), which the policy says with ``undo:``.

Credentials: moto does not verify signatures but, like S3, refuses an
unsigned request (no ``Authorization``) on an existing private object with
403. The gateway's own calls (the read after a write, rollback's drift read
and its compensation) carry only the policy's ``credentials`` header, so the
policy injects an ``Authorization`` header (moto takes any; a real S3 would
need the gateway to SigV4-sign each call, which it cannot do). Without it,
see the last test: rollback cannot read, and leaves the objects alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness import AGENT_KEY, policy_text
from tests.thirdparty.conftest import Gateway

RULES = """
- id: read
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: put-object
  match: {methods: [PUT], path: "/{bucket}/{key}"}
  action: allow
  capture: {path: "/{bucket}/{key}"}   # absent before (404): undo is DELETE
- id: delete-object
  match: {methods: [DELETE], path: "/{bucket}/{key}"}
  action: allow
  undo: {method: PUT, path: "/{bucket}/{key}", body: prior}
"""
CREDENTIAL = ('credentials: {header: Authorization, value: "${THIRDPARTY_S3_AUTHORIZATION}"}\n')
ENV = {"THIRDPARTY_S3_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=gateway/20250101/us-east-1/"
                                      "s3/aws4_request, SignedHeaders=host, Signature=0"}
INITIAL = {
    "a.json": {"name": "alpha", "version": 1, "tags": ["x", "y"]},
    "b.json": {"name": "beta", "limits": {"cpu": 2, "memory": "4Gi"}},
    "d.json": {"name": "delta", "untouched": True},
}


def client(endpoint: str, run: str | None = None) -> Any:
    import boto3  # here: the moto_server fixture skips (or fails in CI) when it is missing
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",  # the agent's key
                      aws_access_key_id=AGENT_KEY if run is not None else "testing",  # is its id
                      aws_secret_access_key="testing",
                      config=Config(s3={"addressing_style": "path"},
                                    retries={"max_attempts": 1, "mode": "standard"}))
    if run is not None:
        def gateway_headers(request: Any, **_: Any) -> None:  # after signing: not signed
            request.headers["X-Agent-Run"] = run
        s3.meta.events.register("before-send.s3", gateway_headers)
    return s3


def contents(s3: Any, bucket: str) -> dict[str, tuple[Any, str]]:
    """Every object in ``bucket``: {key: (parsed JSON body, content type)}."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    out = {}
    for key in keys:
        obj = s3.get_object(Bucket=bucket, Key=key)
        out[key] = (json.loads(obj["Body"].read()), obj["ContentType"])
    return out


@pytest.fixture
def bucket(moto_server: str) -> Iterator[str]:
    name = f"docs-{uuid.uuid4().hex[:12]}"
    s3 = client(moto_server)
    s3.create_bucket(Bucket=name)
    for key, body in INITIAL.items():
        s3.put_object(Bucket=name, Key=key, Body=json.dumps(body).encode(),
                      ContentType="application/json")
    yield name


def agent_run(gateway: Gateway, bucket: str, run: str) -> None:
    agent = client(f"{gateway.proxy}/s3", run=run)
    answers = [
        agent.put_object(Bucket=bucket, Key="a.json", ContentType="application/json",
                         Body=json.dumps({"name": "alpha", "version": 2}).encode()),
        agent.put_object(Bucket=bucket, Key="c.json", ContentType="application/json",
                         Body=json.dumps({"name": "gamma", "new": True}).encode()),
        agent.delete_object(Bucket=bucket, Key="b.json"),
    ]
    for answer in answers:
        meta = answer["ResponseMetadata"]
        assert meta["HTTPHeaders"]["x-gateway-decision"] == "allow", meta


def test_put_overwrite_create_and_delete_roll_back_to_the_initial_objects(
        moto_server: str, bucket: str, gateway_factory: Callable[..., Gateway]) -> None:
    direct = client(moto_server)
    expected = {key: (body, "application/json") for key, body in INITIAL.items()}
    assert contents(direct, bucket) == expected
    gateway = gateway_factory({"s3.yaml": policy_text(moto_server, RULES, upstream="s3",
                                                      extra=CREDENTIAL)}, env=ENV)
    agent_run(gateway, bucket, "s3-run-1")

    changed = contents(direct, bucket)
    assert set(changed) == {"a.json", "c.json", "d.json"}
    assert changed["a.json"][0] == {"name": "alpha", "version": 2}
    assert changed["c.json"][0] == {"name": "gamma", "new": True}
    journal = {e["path"]: e for e in gateway.journal(run="s3-run-1")}
    assert set(journal) == {f"/{bucket}/a.json", f"/{bucket}/c.json", f"/{bucket}/b.json"}
    assert journal[f"/{bucket}/a.json"]["prior"] == INITIAL["a.json"]
    assert journal[f"/{bucket}/c.json"]["prior"] is None
    assert journal[f"/{bucket}/c.json"]["undo"]["method"] == "DELETE"
    assert journal[f"/{bucket}/b.json"]["undo"] == {
        "method": "PUT", "path": f"/{bucket}/b.json", "body": INITIAL["b.json"],
        "content_type": "application/json"}
    assert all(e["reversible"] for e in journal.values())

    plan = gateway.rollback(run="s3-run-1", dry_run=False)
    assert plan["status"] == "done", plan
    assert [(s["method"], s["path"], s["status"]) for s in plan["steps"]] == [
        ("PUT", f"/{bucket}/b.json", "applied"),
        ("DELETE", f"/{bucket}/c.json", "applied"),
        ("PUT", f"/{bucket}/a.json", "applied"),
    ]
    assert contents(direct, bucket) == expected


def test_without_a_credential_the_gateway_cannot_read_s3_and_sends_no_write(
        moto_server: str, bucket: str, gateway_factory: Callable[..., Gateway]) -> None:
    """The agent's signature carries its key, so it never reaches S3; with no
    credential in the policy the capture GET goes unsigned (403) and the write
    is refused before it is sent (502 capture_failed): nothing changes."""
    from botocore.exceptions import ClientError

    direct = client(moto_server)
    before = contents(direct, bucket)
    gateway = gateway_factory({"s3.yaml": policy_text(moto_server, RULES, upstream="s3")})
    agent = client(f"{gateway.proxy}/s3", run="s3-run-2")
    with pytest.raises(ClientError) as refused:
        agent.put_object(Bucket=bucket, Key="a.json", ContentType="application/json",
                         Body=json.dumps({"name": "alpha", "version": 3}).encode())
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert contents(direct, bucket) == before
    assert gateway.journal(run="s3-run-2") == []  # refused before anything was journaled


def test_a_deleted_text_object_is_restored_as_it_was_or_not_at_all(
        moto_server: str, bucket: str, gateway_factory: Callable[..., Gateway]) -> None:
    direct = client(moto_server)
    direct.put_object(Bucket=bucket, Key="notes.txt", Body=b"hello\nworld\n",
                      ContentType="text/plain")
    gateway = gateway_factory({"s3.yaml": policy_text(moto_server, RULES, upstream="s3",
                                                      extra=CREDENTIAL)}, env=ENV)
    client(f"{gateway.proxy}/s3", run="s3-run-3").delete_object(Bucket=bucket, Key="notes.txt")

    plan = gateway.rollback(run="s3-run-3", dry_run=False)
    if plan["steps"] and plan["steps"][0]["status"] == "applied":  # restored: exactly
        restored = direct.get_object(Bucket=bucket, Key="notes.txt")
        assert (restored["Body"].read(), restored["ContentType"]) == \
            (b"hello\nworld\n", "text/plain")
    else:  # or refused, and said so; nothing written in its place
        assert [i["path"] for i in plan["irreversible"]] == [f"/{bucket}/notes.txt"] \
            or plan["steps"][0]["status"] in ("failed", "conflict"), plan
        assert "notes.txt" not in {o["Key"] for o in
                                   direct.list_objects_v2(Bucket=bucket).get("Contents", [])}
