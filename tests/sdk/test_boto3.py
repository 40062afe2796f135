"""boto3, unchanged, through the gateway to moto's S3 with signature checks on.

The agent's only settings are documented boto3 ones: ``endpoint_url`` (the
gateway + ``/s3``), path addressing, and its agent key as the access key id
(the secret is anything: the gateway checks nothing of the agent's
signature). moto verifies every request against the IAM user's secret, which
only the gateway holds (the example policy's ``aws_sigv4``): the write, the
capture GET before it, the read after it and rollback all carry the
gateway's own signature, or moto answers 403.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.harness import AGENT_KEY
from tests.sdk.conftest import Moto, SdkGateway

ORIGINAL = b'{"name": "alpha",  "version": 1}\n'  # spacing a JSON re-encoding would lose


def s3(endpoint: str, key_id: str, secret: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1, "mode": "standard"}))


@pytest.fixture(scope="module")
def bucket(moto_signed: Moto) -> str:
    name = f"sdk-{uuid.uuid4().hex[:10]}"
    owner = s3(moto_signed.url, moto_signed.access_key_id, moto_signed.secret_access_key)
    owner.create_bucket(Bucket=name)
    owner.put_object(Bucket=name, Key="a.json", Body=ORIGINAL, ContentType="application/json")
    return name


def test_moto_verifies_signatures(moto_signed: Moto, bucket: str) -> None:
    wrong = s3(moto_signed.url, moto_signed.access_key_id, "not-the-secret")
    with pytest.raises(ClientError) as raised:
        wrong.get_object(Bucket=bucket, Key="a.json")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_put_object_through_the_gateway_is_signed_journaled_and_rolled_back(
        moto_signed: Moto, bucket: str, sdk_gateway: SdkGateway) -> None:
    owner = s3(moto_signed.url, moto_signed.access_key_id, moto_signed.secret_access_key)
    agent = s3(f"{sdk_gateway.proxy}/s3", AGENT_KEY, "the-agent-knows-no-secret")

    answer = agent.put_object(Bucket=bucket, Key="a.json", Body=b'{"name": "alpha", "version": 2}',
                              ContentType="application/json")
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-gateway-decision"] == "allow"
    assert owner.get_object(Bucket=bucket, Key="a.json")["Body"].read() == \
        b'{"name": "alpha", "version": 2}'
    created = agent.put_object(Bucket=bucket, Key="new.json", Body=b'{"new": true}',
                               ContentType="application/json")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert agent.get_object(Bucket=bucket, Key="new.json")["Body"].read() == b'{"new": true}'

    entries = {e["path"]: e for e in sdk_gateway.entries("s3") if bucket in e["path"]}
    put = entries[f"/{bucket}/a.json"]
    assert put["prior"] == {"name": "alpha", "version": 1}  # the captured prior state
    assert entries[f"/{bucket}/new.json"]["undo"]["method"] == "DELETE"  # absent before

    plan = sdk_gateway.roll_back(entries=[put["id"], entries[f"/{bucket}/new.json"]["id"]])
    assert sorted(s["status"] for s in plan["steps"]) == ["applied", "applied"], (
        json.dumps(plan["conflicts"]))
    with pytest.raises(ClientError):
        owner.head_object(Bucket=bucket, Key="new.json")
    restored = owner.get_object(Bucket=bucket, Key="a.json")
    assert restored["ContentType"] == "application/json"
    # byte for byte: needs the byte-exact priors built beside this (issue 8, helper B)
    assert restored["Body"].read() == ORIGINAL


NESTED = "reports/2026/q4/summary.csv"
BIG = bytes(range(256)) * 24  # two parts (moto is told parts may be 1 KiB: conftest)


def test_nested_keys_multipart_and_metadata_roll_back_byte_for_byte(
        moto_signed: Moto, bucket: str, sdk_gateway: SdkGateway) -> None:
    owner = s3(moto_signed.url, moto_signed.access_key_id, moto_signed.secret_access_key)
    agent = s3(f"{sdk_gateway.proxy}/s3", AGENT_KEY, "the-agent-knows-no-secret")
    owner.put_object(Bucket=bucket, Key=NESTED, Body=b"a,b\n1,2\n", ContentType="text/csv",
                     Metadata={"team": "finance", "source": "ledger"})

    # a key with "/" goes through (the old one-segment rule denied it with a bare 403)
    agent.put_object(Bucket=bucket, Key=NESTED, Body=b"overwritten", ContentType="text/plain",
                     Metadata={"team": "agent"})
    assert owner.get_object(Bucket=bucket, Key=NESTED)["Metadata"] == {"team": "agent"}
    # a multipart upload onto another nested key that had an object with metadata
    owner.put_object(Bucket=bucket, Key="big/data.bin", Body=b"small original",
                     ContentType="application/octet-stream", Metadata={"kind": "seed"})
    upload = agent.create_multipart_upload(Bucket=bucket, Key="big/data.bin",
                                           Metadata={"kind": "agent"})
    parts = []
    for number, chunk in enumerate((BIG[:4096], BIG[4096:]), start=1):
        part = agent.upload_part(Bucket=bucket, Key="big/data.bin", PartNumber=number,
                                 UploadId=upload["UploadId"], Body=chunk)
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    agent.complete_multipart_upload(Bucket=bucket, Key="big/data.bin",
                                    UploadId=upload["UploadId"],
                                    MultipartUpload={"Parts": parts})
    assert owner.get_object(Bucket=bucket, Key="big/data.bin")["Body"].read() == BIG
    # a brand-new nested object, by multipart too: undone by DELETE
    fresh = agent.create_multipart_upload(Bucket=bucket, Key="new/deep/file.bin")
    part = agent.upload_part(Bucket=bucket, Key="new/deep/file.bin", PartNumber=1,
                             UploadId=fresh["UploadId"], Body=b"tiny")
    agent.complete_multipart_upload(Bucket=bucket, Key="new/deep/file.bin",
                                    UploadId=fresh["UploadId"],
                                    MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                "ETag": part["ETag"]}]})
    # refusals come back as S3 errors boto3 can read
    with pytest.raises(ClientError) as refused:
        agent.delete_bucket(Bucket=bucket)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert "policy_denied" in refused.value.response["Error"]["Message"]

    mine = [e for e in sdk_gateway.entries("s3") if bucket in e["path"]
            and e["path"].split("/", 2)[2] in (NESTED, "big/data.bin", "new/deep/file.bin")]
    assert sorted((e["method"], e["path"].split("/", 2)[2]) for e in mine) == [
        ("POST", "big/data.bin"), ("POST", "new/deep/file.bin"), ("PUT", NESTED)]
    plan = sdk_gateway.roll_back(entries=[e["id"] for e in mine])
    assert [s["status"] for s in plan["steps"]] == ["applied"] * 3, json.dumps(plan)
    restored = owner.get_object(Bucket=bucket, Key=NESTED)
    assert restored["Body"].read() == b"a,b\n1,2\n"
    assert restored["ContentType"] == "text/csv"
    assert restored["Metadata"] == {"team": "finance", "source": "ledger"}
    big = owner.get_object(Bucket=bucket, Key="big/data.bin")
    assert big["Body"].read() == b"small original"
    assert big["Metadata"] == {"kind": "seed"}
    with pytest.raises(ClientError):
        owner.head_object(Bucket=bucket, Key="new/deep/file.bin")
