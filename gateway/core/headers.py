"""Header hygiene between agent, gateway and upstream (pure).

Requests lose hop-by-hop headers, the agent's key, and the ``X-Gateway-*``
and ``X-Agent-*`` headers (the gateway's own vocabulary never leaks
upstream); the upstream credential is injected. Responses lose hop-by-hop
headers and any ``X-Gateway-*`` an upstream tried to set.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# Routing headers some servers and frameworks obey over the request line (IIS URL
# Rewrite, Symfony, Zend, Django behind proxies): from an agent they would make the
# upstream serve a path or host the policy did not judge.
ROUTING = frozenset({"x-original-url", "x-original-uri", "x-rewrite-url", "x-forwarded-host",
                     "x-forwarded-prefix"})


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def upstream_request_headers(headers: list[tuple[str, str]], agent_key: str | None,
                             credential: tuple[str, str] | None, host: str,
                             drop_encoding: bool = False) -> list[tuple[str, str]]:
    """Headers to send upstream. ``headers`` have lower-case names."""
    drop = HOP_BY_HOP | ROUTING | _connection_tokens(headers) | {"host", "content-length"}
    if credential is not None:
        drop = drop | {credential[0].lower()}
    if drop_encoding:
        drop = drop | {"accept-encoding"}
    out = []
    for name, value in headers:
        if name in drop or name.startswith("x-gateway-") or name.startswith("x-agent-"):
            continue
        if name == "authorization" and agent_key is not None and _bearer(value) == agent_key:
            continue
        out.append((name, value))
    out.append(("host", host))
    if credential is not None and credential[1]:
        out.append(credential)
    return out


def agent_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers as the agent may see them."""
    items = list(headers)
    lowered = [(k.lower(), v) for k, v in items]
    drop = HOP_BY_HOP | _connection_tokens(lowered)
    return [(k, v) for (k, v), (low, _) in zip(items, lowered)
            if low not in drop and not low.startswith("x-gateway-")]


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def agent_key(headers: list[tuple[str, str]]) -> str | None:
    """The agent's key from ``X-Gateway-Key`` or ``Authorization: Bearer``."""
    bearer = None
    for name, value in headers:
        if name == "x-gateway-key" and value.strip():
            return value.strip()
        if name == "authorization" and bearer is None:
            bearer = _bearer(value)
    return bearer
