"""The upstream's own credential on every request the gateway sends it.

``{header, value}`` and ``basic`` are headers (set by ``gateway.core.headers``);
``query`` adds a parameter to the URL; ``aws_sigv4`` signs the request as it
will be sent (method, URL, headers, body) with botocore's signer, so an agent
that signed for the gateway's host and path (boto3 with ``endpoint_url``
pointing at the gateway) never needs the real secret: the gateway drops that
signature and signs again, for forwarded calls, capture GETs, reads after
writes and rollback alike. Signing does no I/O, but it depends on botocore,
so it lives here and not in the pure core.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

from gateway.core.body import field_key
from gateway.core.policy.compiled import Credential, Upstream
from gateway.core.policy.schema import SigV4Credential

Headers = list[tuple[str, str]]
_SIGNED_BY_US = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


def with_query(upstream: Upstream, url: str) -> str:
    """``url`` with the credential's query parameter (``query`` kind), else as is."""
    credential = upstream.credential
    if credential is None or credential.query is None:
        return url
    name, value = credential.query
    pair = f"{quote(name, safe='')}={quote(value, safe='')}"
    base, sep, query = url.partition("?")
    key = field_key(name)
    kept = [p for p in query.split("&") if p and not any(  # the agent's own, however spelt
        field_key(unquote_plus(part.split("=", 1)[0]).strip(), nested=True) == key
        for part in p.split(";"))]
    return f"{base}?{'&'.join([*kept, pair])}"


def signed(upstream: Upstream, method: str, url: str, headers: Headers,
           body: bytes | None) -> Headers:
    """``headers`` signed for ``method url body`` when the upstream uses SigV4."""
    credential: Credential | None = upstream.credential
    if credential is None or credential.sigv4 is None:
        return headers
    return sigv4_headers(credential.sigv4, method, url, headers, body)


def sigv4_headers(keys: SigV4Credential, method: str, url: str, headers: Headers,
                  body: bytes | None) -> Headers:
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    kept = [(k, v) for k, v in headers if k.lower() not in _SIGNED_BY_US]
    request = AWSRequest(method=method, url=url, data=body or b"")
    for name, value in kept:
        request.headers[name] = value
    signer_class = S3SigV4Auth if keys.service == "s3" else SigV4Auth
    signer = signer_class(Credentials(keys.access_key_id, keys.secret_access_key,
                                      keys.session_token), keys.service, keys.region)
    signer.add_auth(request)
    return [(k.lower(), v) for k, v in request.headers.items()]
