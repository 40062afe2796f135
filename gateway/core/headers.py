"""Header hygiene between agent, gateway and upstream (pure).

Requests lose hop-by-hop headers, the agent's key, and the ``X-Gateway-*``
and ``X-Agent-*`` headers (the gateway's own vocabulary never leaks
upstream); the upstream credential is injected. Responses lose hop-by-hop
headers and any ``X-Gateway-*`` an upstream tried to set.

Agent identity (``identify``): SDKs carry their key where their API wants
it, so the key is read from every scheme they use: ``X-Gateway-Key``,
``Authorization: Bearer`` / ``token`` (GitHub) / ``Basic`` (the key as user
name or password) / ``AWS4-HMAC-SHA256 Credential=KEY/...`` (boto3's access
key id; S3's older ``AWS KEY:sig``), and ``X-Api-Key``. One call carries one
identity: two different keys (also one ``Basic`` pair or two SigV4
``Credential=``), an identity header sent twice (also spelt with ``_``), or
another agent's key anywhere else (any header, the query) is
``AmbiguousIdentity`` (400). Once
known, the key is removed from every header and query parameter that
carries it, so nothing downstream (journal, held calls, the upstream) sees it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, unquote_plus

from gateway.errors import AmbiguousIdentity

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


def _connection_tokens(value: str) -> set[str]:
    """The header names a ``Connection`` value lists (hop-by-hop for this hop only)."""
    return {t.strip().lower() for t in value.split(",") if t.strip()}


_ALWAYS_DROPPED = HOP_BY_HOP | ROUTING | {"host", "content-length"}
_OURS = ("x-gateway-", "x-agent-")


def upstream_request_headers(headers: list[tuple[str, str]], agent_key: str | None,
                             credential: tuple[str, str] | None, host: str,
                             drop_encoding: bool = False,
                             replaces: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Headers to send upstream. ``headers`` have lower-case names; ``replaces`` are
    agent headers the upstream's credential supersedes (a SigV4 signature's)."""
    drop = _dropped(replaces, None if credential is None else credential[0].lower(),
                    drop_encoding)
    out = []
    listed: set[str] = set()  # what a Connection header names is dropped too (below)
    for header in headers:
        name, value = header
        if name in drop or name.startswith(_OURS) or "_" in name and _dropped_spelling(
                name, drop):
            if name == "connection":
                listed |= _connection_tokens(value)
            continue
        if name in IDENTITY_HEADERS and agent_key is not None and (
                agent_key in _candidates(name, value) or agent_key in value):
            continue
        out.append(header)
    if listed:
        out = [(name, value) for name, value in out if name not in listed]
    out.append(("host", host))
    if credential is not None and credential[1]:
        out.append(credential)
    return out


def _dropped_spelling(name: str, drop: frozenset[str]) -> bool:
    """``X_Original_URL``, ``X_Gateway_Key``: what WSGI and CGI servers (and Puma) read
    as the ``-`` spelling, which is dropped, so this one is too."""
    folded = name.replace("_", "-")
    return folded in drop or folded.startswith(_OURS)


def method_override(name: str) -> bool:
    """Whether header ``name`` (lower case) overrides the method, however spelt:
    Rack's ``MethodOverride`` reads ``X_HTTP_Method_Override`` under Puma as it reads
    ``X-HTTP-Method-Override`` (both are ``HTTP_X_HTTP_METHOD_OVERRIDE``)."""
    return name in METHOD_OVERRIDES or "_" in name and name.replace("_", "-") in METHOD_OVERRIDES


@lru_cache(maxsize=64)  # two requests a write (capture, forward): one set, not six unions
def _dropped(replaces: frozenset[str], credential: str | None,
             drop_encoding: bool) -> frozenset[str]:
    drop = _ALWAYS_DROPPED | replaces
    if credential is not None:
        drop = drop | {credential}
    if drop_encoding:
        drop = drop | {"accept-encoding"}
    return drop


def agent_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers as the agent may see them."""
    out = []
    listed: set[str] = set()
    for header in headers:
        low = header[0].lower()
        if low in HOP_BY_HOP or low.startswith("x-gateway-"):
            if low == "connection":
                listed |= _connection_tokens(header[1])
            continue
        out.append(header)
    if listed:
        out = [(name, value) for name, value in out if name.lower() not in listed]
    return out


IDENTITY_HEADERS = ("x-gateway-key", "authorization", "x-api-key")
_SIGV4_CREDENTIAL = re.compile(r"(?:^|[\s,])Credential=([^/,\s]+)/")


# Headers that carry no key, whatever an agent sends: not searched for one.
_ORDINARY = frozenset({
    "host", "accept", "accept-encoding", "accept-language", "connection", "content-length",
    "content-type", "user-agent", "expect", "te", "transfer-encoding", "traceparent",
    "tracestate", "x-amz-date", "x-amz-content-sha256", "if-match", "if-none-match",
    "idempotency-key", "mcp-session-id", "mcp-protocol-version", "cache-control",
})
_TOKENS = re.compile(r"[\s,;:=&]+")
_SHORTEST_KEY = 8  # shorter tokens are not searched (page numbers, flags)


def authorization_keys(value: str) -> tuple[str, ...]:
    """The agent key candidates an ``Authorization`` value carries, in preference order.

    >>> authorization_keys("token k1"), authorization_keys("Basic " + "dXNlcjpwdw==")
    (('k1',), ('user', 'pw'))
    >>> authorization_keys("AWS4-HMAC-SHA256 Credential=k1/20261201/us-east-1/s3/aws4_request")
    ('k1',)
    """
    scheme, _, rest = value.strip().partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme in ("bearer", "token"):
        return (rest,) if rest else ()
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(rest, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ()
        return tuple(dict.fromkeys(part for part in (user, password) if part))
    if scheme == "aws4-hmac-sha256":  # two ``Credential=`` are two candidates
        return tuple(dict.fromkeys(_SIGV4_CREDENTIAL.findall(rest)))
    if scheme == "aws":  # S3's signature version 2: ``AWS key:signature``
        key = rest.partition(":")[0].strip()
        return (key,) if key else ()
    return ()


def _candidates(name: str, value: str) -> tuple[str, ...]:
    if name == "authorization":
        return authorization_keys(value)
    value = value.strip()
    return (value,) if value else ()


@dataclass(frozen=True, slots=True)
class Identity:
    """The agent's key (None: none presented) and the request without it anywhere."""

    key: str | None
    headers: list[tuple[str, str]]
    query: str


def identify(headers: list[tuple[str, str]], query: str,
             known: Callable[[str], bool]) -> Identity:
    """Read the one agent key of a call; strip it from ``headers`` and ``query``.

    ``headers`` have lower-case names; ``known(key)`` tells whether a key belongs
    to an agent (for ``Basic``, where either half may be the key). Raises
    ``AmbiguousIdentity``.
    """
    keys: list[str] = []
    seen: set[str] = set()
    others: list[str] = []  # values that could smuggle another agent's key
    kept: list[tuple[str, str]] = []  # the headers that carry no identity
    for header in headers:
        name, value = header
        if "_" in name:  # ``X_Gateway_Key``: servers that map ``_`` to ``-`` read it as one
            name = name.replace("_", "-")
        if name not in IDENTITY_HEADERS:
            if name not in _ORDINARY and not name.startswith("x-agent-"):
                others.append(value)
            kept.append(header)
            continue
        if name in seen:
            raise AmbiguousIdentity(f"{name} is sent more than once: one call carries "
                                    "one agent identity")
        seen.add(name)
        candidates = _candidates(name, value)
        if not candidates:
            kept.append(header)
        elif len(candidates) == 1:
            keys.append(candidates[0])
        else:  # Basic: the half that is an agent's key (hashed only then)
            agents = [c for c in candidates if known(c)]
            if len(agents) > 1 or value.lstrip()[:4].lower() == "aws4":
                raise AmbiguousIdentity(f"{name} carries two keys: one call carries one "
                                        "agent identity")
            keys.append(agents[0] if agents else candidates[0])
    if len(set(keys)) > 1:
        raise AmbiguousIdentity("the call carries two different agent keys "
                                f"(in {', '.join(sorted(seen))}): one call carries one identity")
    key = keys[0] if keys else None
    if query:
        others.extend(value for _, value in parse_qsl(query, keep_blank_values=True))
    for value in others:  # another agent's key, anywhere else, never reaches an upstream
        for token in _TOKENS.split(value):
            if len(token) >= _SHORTEST_KEY and token != key and known(token):
                raise AmbiguousIdentity("the call carries another agent's key: one call "
                                        "carries one identity")
    if key:
        kept = [(name, value) for name, value in kept if key not in value]
    return Identity(key, kept, without_key(query, key))


def without_key(query: str, key: str | None) -> str:
    """``query`` minus every parameter whose name or value carries ``key`` (raw text kept)."""
    if not key or not query:
        return query
    kept = [part for part in query.split("&")
            if key not in part and key not in unquote_plus(part)]
    return "&".join(kept)


def agent_key(headers: list[tuple[str, str]]) -> str | None:
    """The agent's key, if one is presented (raises ``AmbiguousIdentity``)."""
    return identify(headers, "", lambda _: False).key
