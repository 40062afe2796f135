"""One gateway in front of every SDK's upstream, shared by the SDK tests.

Upstreams: localstripe (PyPI, a stateful fake Stripe) for stripe; moto's
server with IAM authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``: after
the set-up calls, every request's SigV4 signature is verified against the
IAM user's secret) for boto3; the recording server (``recorder.py``) for
GitHub, OpenAI, HubSpot, Slack and Zendesk. The gateway loads the shipped example
policies from ``policies/examples/`` with only ``base_url`` changed, and runs
as a real process with ``public_url`` set (its proxy port is chosen first).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.procs import Proc, start_gateway, wait_for_line, write_settings
from tests.harness import AGENT_KEY
from tests.sdk.recorder import Recorder, serve
from tests.thirdparty.conftest import ADMIN, Gateway, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
# the upstream credentials the gateway injects (never the agent's key)
UPSTREAM_SECRETS = {"STRIPE_API_KEY": "sk_test_upstream_secret", "GITHUB_TOKEN": "ghp_upstream",
                    "HUBSPOT_ACCESS_TOKEN": "pat-upstream", "SLACK_BOT_TOKEN": "xoxb-upstream",
                    "OPENAI_API_KEY": "sk-upstream", "ZENDESK_OAUTH_TOKEN": "zd-upstream"}


def example(name: str, base_url: str) -> str:
    """A shipped example policy with its base_url pointed at a local server."""
    text = (EXAMPLES / f"{name}.yaml").read_text()
    return re.sub(r"(?m)^base_url: .*$", f"base_url: {base_url}", text, count=1)


def _answers(url: str, proc: subprocess.Popen[Any]) -> None:
    for _ in range(400):
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            pass
        try:
            proc.wait(timeout=0.05)
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        except subprocess.TimeoutExpired:
            continue
    raise AssertionError(f"{url} did not answer")


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from localstripe.server import start; start()",
                             "--port", str(port), "--from-scratch"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _answers(url, proc)
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@dataclass
class Moto:
    url: str
    access_key_id: str
    secret_access_key: str


@pytest.fixture(scope="session")
def moto_signed() -> Iterator[Moto]:
    """moto's server with signature checks on, and an IAM user allowed s3:*."""
    import boto3

    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3",
                                 # multipart tests with parts of kilobytes, not 5 MiB
                                 "S3_UPLOAD_PART_MIN_SIZE": "1024"})
    match, _ = wait_for_line(proc, re.compile(r"Running on (http://127\.0\.0\.1:\d+)"), "stderr")
    server = Proc(proc, (match.group(1),))
    url = match.group(1)
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="gateway")  # the three unauthenticated set-up calls
    iam.put_user_policy(UserName="gateway", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="gateway")["AccessKey"]
    yield Moto(url, key["AccessKeyId"], key["SecretAccessKey"])
    server.stop()


@pytest.fixture(scope="session")
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    server, thread = serve(recording)
    yield recording
    server.should_exit = True
    thread.join(15)


@dataclass
class SdkGateway(Gateway):
    public_url: str = ""

    def entries(self, upstream: str) -> list[dict[str, Any]]:
        return self.journal(upstream=upstream)

    def roll_back(self, **selector: Any) -> dict[str, Any]:
        plan = self.rollback(dry_run=False, **selector)
        return plan


@pytest.fixture(scope="session")
def sdk_gateway(tmp_path_factory: pytest.TempPathFactory, localstripe: str, moto_signed: Moto,
                recorder: Recorder) -> Iterator[SdkGateway]:
    directory = tmp_path_factory.mktemp("sdk-gateway")
    (directory / "policies").mkdir()
    policies = {
        "stripe": localstripe, "s3": moto_signed.url, "github": f"{recorder.url}/github",
        "openai": f"{recorder.url}/openai", "hubspot": f"{recorder.url}/hubspot",
        "slack": f"{recorder.url}/slack", "zendesk": f"{recorder.url}/zendesk",
    }
    for name, base_url in policies.items():
        (directory / "policies" / f"{name}.yaml").write_text(example(name, base_url))
    (directory / "db").mkdir()
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    config = write_settings(directory, f"sqlite+aiosqlite:///{directory / 'db' / 'gateway.db'}",
                            public_url=public_url)
    settings = yaml.safe_load(config.read_text())
    settings["proxy"]["port"] = port  # known before start: public_url names it
    config.write_text(yaml.safe_dump(settings))
    env = {**UPSTREAM_SECRETS, "AWS_ACCESS_KEY_ID": moto_signed.access_key_id,
           "AWS_SECRET_ACCESS_KEY": moto_signed.secret_access_key}
    proc = start_gateway(config, env=env)
    assert proc.urls[0] == public_url, proc.urls
    gateway = SdkGateway(proc.urls[0], proc.urls[1], proc, public_url)
    yield gateway
    assert proc.stop() == 0, "".join(proc.output)


def agent_key_nowhere(seen: list[Any]) -> None:
    """No request the upstream received carries the agent's key, in any header,
    the query or the body."""
    assert seen, "the upstream saw nothing"
    for request in seen:
        for name, value in request.headers:
            assert AGENT_KEY not in value, (request.method, request.path, name)
        assert AGENT_KEY not in request.query, (request.method, request.path)
        assert AGENT_KEY.encode() not in request.body, (request.method, request.path)


__all__ = ["ADMIN", "AGENT_KEY", "Moto", "SdkGateway", "agent_key_nowhere", "example"]
