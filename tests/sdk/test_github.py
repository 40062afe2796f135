"""PyGithub and githubkit, unchanged, through the gateway to the recording server.

Both send ``Authorization: token KEY`` (GitHub's scheme), which the gateway
reads as the agent key and replaces with the policy's token. PyGithub follows
the absolute ``url`` fields GitHub returns (``repo.get_issue`` GETs
``repo.url + /issues/1``): the example policy's ``rewrite_urls`` points them
at the gateway, so every request of the SDK passes it; the recording server
sees each one with the gateway's token, never the agent's key.
"""

from __future__ import annotations

import pytest
from github import Auth, Github
from githubkit import GitHub, TokenAuthStrategy

from tests.harness import AGENT_KEY
from tests.sdk.conftest import UPSTREAM_SECRETS, SdkGateway, agent_key_nowhere
from tests.sdk.recorder import Recorder

REPO = "/github/repos/octo/hello"


def issue(number: int, title: str) -> dict[str, object]:
    return {"id": 100 + number, "number": number, "title": title, "state": "open",
            "body": "seen in production", "labels": [],
            "url": f"{{base}}{REPO}/issues/{number}",
            "html_url": f"https://github.com/octo/hello/issues/{number}"}


@pytest.fixture(scope="module", autouse=True)
def seeded(recorder: Recorder) -> None:
    recorder.seed({
        REPO: {"id": 1, "name": "hello", "full_name": "octo/hello", "owner": {"login": "octo"},
               "url": f"{{base}}{REPO}", "issues_url": f"{{base}}{REPO}/issues{{/number}}"},
        f"{REPO}/issues/1": issue(1, "Crash on start"),
        f"{REPO}/issues/2": issue(2, "Typo in README"),
    })


def through_gateway(recorder: Recorder, since: int) -> None:
    seen = recorder.seen[since:]
    agent_key_nowhere(seen)
    for request in seen:  # nothing reached the upstream except through the gateway
        assert ("authorization", f"Bearer {UPSTREAM_SECRETS['GITHUB_TOKEN']}") in \
            request.headers, (request.method, request.path)


def test_pygithub_edit_follows_rewritten_urls_and_rolls_back(
        recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    since = len(recorder.seen)
    gh = Github(base_url=f"{sdk_gateway.proxy}/github", auth=Auth.Token(AGENT_KEY), retry=None)
    repo = gh.get_repo("octo/hello")
    assert repo.url == f"{sdk_gateway.public_url}{REPO}"  # rewritten: behind the gateway
    found = repo.get_issue(1)
    found.edit(title="Crash on start (triaged)")
    assert recorder.state(f"{REPO}/issues/1")["title"] == "Crash on start (triaged)"
    through_gateway(recorder, since)

    entry = next(e for e in sdk_gateway.entries("github")
                 if e["path"] == "/repos/octo/hello/issues/1")
    assert entry["prior"]["title"] == "Crash on start"
    assert entry["undo"]["body"] == {"title": "Crash on start"}
    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    assert recorder.state(f"{REPO}/issues/1")["title"] == "Crash on start"
    through_gateway(recorder, since)


def test_githubkit_edit_rolls_back_and_its_key_stays_home(
        recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    since = len(recorder.seen)
    gh = GitHub(TokenAuthStrategy(AGENT_KEY), base_url=f"{sdk_gateway.proxy}/github/")
    response = gh.rest.issues.update("octo", "hello", 2, title="Typo in README (fixed)",
                                     state="closed")
    assert response.status_code == 200
    assert response.headers["x-gateway-decision"] == "allow"
    assert recorder.state(f"{REPO}/issues/2")["state"] == "closed"

    entry = next(e for e in sdk_gateway.entries("github")
                 if e["path"] == "/repos/octo/hello/issues/2")
    assert (entry["prior"]["title"], entry["prior"]["state"]) == ("Typo in README", "open")
    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    restored = recorder.state(f"{REPO}/issues/2")
    assert (restored["title"], restored["state"]) == ("Typo in README", "open")
    through_gateway(recorder, since)
