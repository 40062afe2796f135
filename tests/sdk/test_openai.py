"""openai-python, unchanged (``base_url`` and ``api_key`` only), through the gateway.

No OpenAI-compatible server on PyPI installs and runs offline with files and
assistants, so the upstream is the recording server. A vector store update
(POST to the item) is captured and undone with the prior values of the fields
sent (assistants have the same rule shape); a multipart file upload gets no
undo built from its fields: it is undone by deleting what it created (the
answer's id), with no body.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.harness import AGENT_KEY
from tests.sdk.conftest import ADMIN, SdkGateway, agent_key_nowhere
from tests.sdk.recorder import Recorder

STORE = "/openai/v1/vector_stores/vs_1"


@pytest.fixture(scope="module", autouse=True)
def seeded(recorder: Recorder) -> None:
    recorder.seed({STORE: {"id": "vs_1", "object": "vector_store", "created_at": 1,
                           "name": "Runbooks", "status": "completed", "usage_bytes": 0,
                           "file_counts": {"in_progress": 0, "completed": 0, "failed": 0,
                                           "cancelled": 0, "total": 0},
                           "metadata": {"team": "support"}}})


def test_vector_store_update_and_file_upload_roll_back(recorder: Recorder,
                                                    sdk_gateway: SdkGateway) -> None:
    since = len(recorder.seen)
    client = OpenAI(api_key=AGENT_KEY, base_url=f"{sdk_gateway.proxy}/openai/v1", max_retries=0)
    updated = client.vector_stores.update("vs_1", name="Runbooks v2",
                                          metadata={"team": "sre"})
    assert updated.name == "Runbooks v2"
    uploaded = client.files.create(file=("notes.txt", b"remember this"), purpose="assistants")
    assert recorder.state(f"/openai/v1/files/{uploaded.id}") is not None

    entries = {e["path"]: e for e in sdk_gateway.entries("openai")}
    update = entries["/v1/vector_stores/vs_1"]
    assert update["prior"]["name"] == "Runbooks"
    assert update["undo"]["body"] == {"name": "Runbooks", "metadata": {"team": "support"}}
    upload = entries["/v1/files"]
    assert (upload["undo"]["method"], upload["undo"]["path"], upload["undo"]["body"]) == (
        "DELETE", f"/v1/files/{uploaded.id}", None)

    plan = sdk_gateway.roll_back(entries=[update["id"], upload["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied", "applied"], plan
    restored = recorder.state(STORE)
    assert (restored["name"], restored["metadata"]) == ("Runbooks", {"team": "support"})
    assert recorder.state(f"/openai/v1/files/{uploaded.id}") is None
    agent_key_nowhere(recorder.seen[since:])


def test_chat_completions_are_reads_and_a_held_delete_is_raised(
        recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    client = OpenAI(api_key=AGENT_KEY, base_url=f"{sdk_gateway.proxy}/openai/v1", max_retries=0)
    before = {e["id"] for e in sdk_gateway.entries("openai")}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-decision"] == "allow"
    assert {e["id"] for e in sdk_gateway.entries("openai")} == before  # not journaled

    recorder.seed({"/openai/v1/files/file-keep": {"id": "file-keep", "object": "file"}})
    with pytest.raises(openai.ConflictError) as held:
        client.files.delete("file-keep")
    error = held.value.body
    assert isinstance(error, dict) and error["code"] == "approval_pending", error
    assert error["approval"] in str(held.value)  # the model sees which approval
    assert error["status_url"] == f"/_gateway/approvals/{error['approval']}"
    assert recorder.state("/openai/v1/files/file-keep") is not None  # not sent
    shown = httpx.get(f"{sdk_gateway.admin}/v1/approvals/{error['approval']}", headers=ADMIN)
    assert shown.json()["status"] == "pending" and shown.json()["rule"] == "delete-file"


def test_the_sdks_own_retries_of_a_held_delete_are_one_held_call(
        recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    """openai-python retries a 409 (a lock timeout, to it) twice by default. Before, each
    retry of a held delete queued another held call, and approving them all sent the
    delete three times; now the retries rejoin the first call."""
    client = OpenAI(api_key=AGENT_KEY, base_url=f"{sdk_gateway.proxy}/openai/v1")  # retries on
    recorder.seed({"/openai/v1/files/file-twice": {"id": "file-twice", "object": "file"}})
    with pytest.raises(openai.ConflictError) as held:
        client.files.delete("file-twice")
    approval = held.value.body["approval"]  # type: ignore[index]
    queued = httpx.get(f"{sdk_gateway.admin}/v1/approvals", params={"status": "pending"},
                       headers=ADMIN).json()["items"]
    assert [c["id"] for c in queued if c["path"] == "/v1/files/file-twice"] == [approval]
    audit = httpx.get(f"{sdk_gateway.admin}/v1/audit", params={"limit": 1000},
                      headers=ADMIN).json()["items"]
    rejoined = [r for r in audit if r["action"] == "approval.rejoined"
                and r["detail"]["approval"] == approval]
    assert len(rejoined) == 2  # the SDK's two retries, each told of the same call
