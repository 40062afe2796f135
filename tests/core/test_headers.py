"""Header hygiene between agent, gateway and upstream."""

from __future__ import annotations

import pytest

from gateway.core.headers import (
    agent_key,
    agent_response_headers,
    identify,
    upstream_request_headers,
)
from gateway.errors import AmbiguousIdentity

AMBIGUOUS = "400: AmbiguousIdentity"

KEY = "agent-key-123"
HOST = "api.example.com"


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


def forward(headers: list[tuple[str, str]], key: str | None = KEY,
            credential: tuple[str, str] | None = None,
            drop_encoding: bool = False) -> list[tuple[str, str]]:
    return upstream_request_headers(headers, key, credential, HOST, drop_encoding)


@pytest.mark.parametrize("name", [
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    "host", "content-length",  # the client recomputes these
])
def test_hop_by_hop_headers_are_not_forwarded(name: str) -> None:
    out = forward([(name, "x"), ("accept", "application/json")])
    assert (name, "x") not in out
    assert ("accept", "application/json") in out


def test_headers_listed_in_connection_are_not_forwarded() -> None:
    out = forward([("connection", "close, X-Secret-Hop ,x-other"), ("x-secret-hop", "1"),
                   ("x-other", "2"), ("x-kept", "3")])
    assert names(out) == ["x-kept", "host"]


@pytest.mark.parametrize("name", [
    "x-gateway-key", "x-gateway-decision", "x-gateway-anything",
    "x-agent-run", "x-agent-model", "x-agent-prompt-version", "x-agent-tool-version",
])
def test_gateway_and_agent_headers_are_not_forwarded(name: str) -> None:
    out = forward([(name, KEY), ("x-gatewayish", "kept")])
    assert names(out) == ["x-gatewayish", "host"]


@pytest.mark.parametrize(("authorization", "forwarded"), [
    (f"Bearer {KEY}", False),
    (f"bearer {KEY}", False),
    (f"Bearer  {KEY} ", False),
    ("Bearer someone-elses-token", True),  # the agent's own upstream token: not ours to drop
    (f"Basic {KEY}", False),  # carries the key: never forwarded, whatever the scheme
    (f"Bearer {KEY}x", False),
    ("Basic c29tZW9uZTplbHNl", True),  # someone:else
])
def test_authorization_is_dropped_only_when_it_is_the_agent_key(authorization: str,
                                                                forwarded: bool) -> None:
    out = forward([("authorization", authorization)])
    assert (("authorization", authorization) in out) is forwarded


def test_authorization_kept_when_the_agent_used_no_key() -> None:
    out = forward([("authorization", f"Bearer {KEY}")], key=None)
    assert ("authorization", f"Bearer {KEY}") in out


@pytest.mark.parametrize(("incoming", "credential"), [
    ([("authorization", f"Bearer {KEY}")], ("authorization", "Bearer upstream-secret")),
    ([("authorization", "Bearer agent-own")], ("authorization", "Bearer upstream-secret")),
    ([("x-api-key", "agent-own"), ("x-gateway-key", KEY)], ("x-api-key", "upstream-secret")),
    ([("x-api-key", "a"), ("x-api-key", "b")], ("x-api-key", "upstream-secret")),
])
def test_credential_replaces_the_agents_header_of_that_name(
        incoming: list[tuple[str, str]], credential: tuple[str, str]) -> None:
    out = forward(incoming + [("accept", "*/*")], credential=credential)
    assert [h for h in out if h[0] == credential[0]] == [credential]
    assert ("accept", "*/*") in out
    assert KEY not in " ".join(v for _, v in out)


def test_empty_credential_value_is_not_sent_and_the_agents_header_still_dropped() -> None:
    out = forward([("authorization", "Bearer agent-own")], credential=("authorization", ""))
    assert "authorization" not in names(out)


def test_host_is_the_upstreams() -> None:
    out = forward([("host", "gateway.local:8080")])
    assert [h for h in out if h[0] == "host"] == [("host", HOST)]


@pytest.mark.parametrize(("drop", "kept"), [(False, True), (True, False)])
def test_drop_encoding(drop: bool, kept: bool) -> None:
    out = forward([("accept-encoding", "gzip")], drop_encoding=drop)
    assert (("accept-encoding", "gzip") in out) is kept


def test_other_headers_keep_their_order_and_repeats() -> None:
    incoming = [("accept", "a"), ("x-trace", "1"), ("x-trace", "2"), ("content-type", "c")]
    assert forward(incoming) == incoming + [("host", HOST)]


@pytest.mark.parametrize(("incoming", "expected"), [
    ([("Content-Type", "application/json"), ("X-Gateway-Decision", "allow"),
      ("x-gateway-request-id", "r1"), ("X-Request-Id", "up-1")],
     [("Content-Type", "application/json"), ("X-Request-Id", "up-1")]),
    ([("Transfer-Encoding", "chunked"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
      ("Keep-Alive", "timeout=5"), ("ETag", '"v1"')],
     [("ETag", '"v1"')]),
    ([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
    ([], []),
])
def test_agent_response_headers(incoming: list[tuple[str, str]],
                                expected: list[tuple[str, str]]) -> None:
    assert agent_response_headers(incoming) == expected


@pytest.mark.parametrize(("headers", "key"), [
    ([("x-gateway-key", KEY)], KEY),
    ([("x-gateway-key", f" {KEY} ")], KEY),
    ([("authorization", f"Bearer {KEY}")], KEY),
    ([("authorization", f"bearer {KEY}")], KEY),
    ([("authorization", f"Bearer {KEY}"), ("x-gateway-key", "other")], AMBIGUOUS),  # two keys
    ([("x-gateway-key", "other"), ("authorization", f"Bearer {KEY}")], AMBIGUOUS),
    ([("authorization", "Bearer first"), ("authorization", "Bearer second")], AMBIGUOUS),
    ([("authorization", f"Bearer {KEY}"), ("x-gateway-key", KEY)], KEY),  # one key, twice: one
    ([("authorization", f"token {KEY}")], KEY),
    ([("x-api-key", KEY)], KEY),
    ([("authorization", f"Basic {KEY}")], None),
    ([("accept", "*/*")], None),
    ([], None),
])
def test_agent_key(headers: list[tuple[str, str]], key: str | None) -> None:
    if key is AMBIGUOUS:
        with pytest.raises(AmbiguousIdentity):
            agent_key(headers)
    else:
        assert agent_key(headers) == key


AGENTS = {KEY, "agent-key-456"}
B64_PAIR = "YWdlbnQta2V5LTEyMzphZ2VudC1rZXktNDU2"  # agent-key-123:agent-key-456
IDENTITIES = [  # (headers, query, the key, or AMBIGUOUS)
    ([("authorization", f"Basic {B64_PAIR}")], "", AMBIGUOUS),
    ([("authorization", f"AWS4-HMAC-SHA256 Credential={KEY}/d/r/s/aws4_request, "
                        "Credential=agent-key-456/d/r/s/aws4_request")], "", AMBIGUOUS),
    ([("x-gateway-key", KEY), ("x_gateway_key", "agent-key-456")], "", AMBIGUOUS),
    ([("x-gateway-key", KEY), ("x-forward-token", "t=agent-key-456")], "", AMBIGUOUS),
    ([("x-gateway-key", KEY)], "token=agent-key-456", AMBIGUOUS),
    ([("x-gateway-key", KEY), ("authorization", "AWS agent-key-456:sig")], "", AMBIGUOUS),
    ([("x_gateway_key", KEY)], "", KEY),
    ([("authorization", f"AWS {KEY}:sig")], "", KEY),
    ([("x-gateway-key", KEY), ("x-forward-token", "someone-elses-token")], "page=20", KEY),
]


@pytest.mark.parametrize(("headers", "query", "key"), IDENTITIES)
def test_one_identity_and_no_other_agents_key(headers: list[tuple[str, str]], query: str,
                                              key: str) -> None:
    if key is AMBIGUOUS:
        with pytest.raises(AmbiguousIdentity):
            identify(headers, query, AGENTS.__contains__)
    else:
        seen = identify(headers, query, AGENTS.__contains__)
        assert seen.key == key
        assert all(key not in value for _, value in seen.headers)
