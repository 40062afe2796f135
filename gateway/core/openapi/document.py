"""An API description read into operations: what ``infer`` needs, nothing more.

OpenAPI 3.0 and 3.1 (``openapi: 3.x``) and Swagger 2.0 (``swagger: "2.0"``)
are read the same way: every path item's operations, with the request body's
media types and top-level field names, the parameters, and the fields the
description marks ``readOnly``. Local ``$ref`` s (``#/...``) are followed,
a cycle or a reference to another file reads as an empty object.

A description path may say more than a gateway template can: a query or
header that tells operations apart (``/{Bucket}#uploads``, ``/?Action=X``, as
the AWS descriptions write them) becomes a ``discriminator``; a segment that
mixes text and a parameter (``{name}.json``, ``{id}:cancel``) becomes ``*``; a
final ``{key+}`` (and S3's object ``{Key}``) takes the rest of the path.

>>> api = read_api({"openapi": "3.0.0", "servers": [{"url": "https://x.test/v1"}],
...     "paths": {"/items/{id}": {"delete": {"operationId": "deleteItem"}}}})
>>> api.base_url, api.operations[0].template, api.operations[0].method
('https://x.test/v1', '/items/{id}', 'DELETE')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import DescriptionError

_METHODS = ("get", "head", "options", "post", "put", "patch", "delete")
_NAME = re.compile(r"^\{([^{}]+?)(\+?)\}$")
_SAFE = re.compile(r"[^A-Za-z0-9_]")
_VARIABLE = re.compile(r"\{([^{}]+)\}")
_DEPTH = 12  # schema nesting followed for allOf / $ref chains


@dataclass(frozen=True, slots=True)
class Operation:
    method: str  # upper case
    path: str  # as the description writes it
    template: str  # the gateway path template it matches
    operation_id: str = ""
    summary: str = ""
    # ("query" | "header", name, the value it must have or None: any value)
    discriminators: tuple[tuple[str, str, str | None], ...] = ()
    media: tuple[str, ...] = ()  # request body media types
    fields: tuple[str, ...] = ()  # request body top-level field names
    read_only: tuple[str, ...] = ()  # fields the description marks readOnly
    query: tuple[str, ...] = ()  # query parameter names
    deprecated: bool = False
    # the 2xx answer: its top-level fields (None: no schema described; () with
    # ``empty``: described with no body, as a 204 or GitHub's "is it merged" GET)
    answer: tuple[str, ...] | None = None
    empty: bool = False
    location: bool = False  # a 2xx answer names a Location header
    # the whole path as a regular expression, when a segment mixes text and a parameter
    # (``/v1/{name}:pause`` is ``/v1/*`` as a template: a ``when`` checks the rest)
    pattern: str | None = None

    @property
    def form(self) -> bool:
        return any(m.startswith("application/x-www-form-urlencoded") for m in self.media)

    @property
    def label(self) -> str:
        return self.operation_id or f"{self.method} {self.path}"


# AWS services described in the query protocol (``?Action=``) whose SDKs now speak the
# JSON one (``X-Amz-Target: <prefix>.<Action>``), by the directory's ``x-serviceName``:
# boto3 sends SQS only so since botocore 1.31 (2023)
AWS_JSON_TARGETS = {"sqs": "AmazonSQS"}


@dataclass(slots=True)
class Api:
    title: str
    version: str  # "2.0", "3.0.3", "3.1.0"
    base_url: str | None
    operations: list[Operation] = field(default_factory=list)
    json_target: str | None = None  # ``AWS_JSON_TARGETS``: its actions also so named


class _Refs:
    """Follows local ``$ref`` s; a cycle or an external reference reads as ``{}``."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def get(self, node: Any, seen: frozenset[str] = frozenset()) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen or not ref.startswith("#"):
                return {}
            seen = seen | {ref}
            node = self._pointer(ref)
        return node

    def _pointer(self, ref: str) -> Any:
        node: Any = self.root
        for raw in ref[1:].split("/")[1:] if ref.startswith("#/") else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def properties(self, schema: Any, depth: int = 0) -> dict[str, Any]:
        """Top-level properties of a schema, ``allOf`` merged (``oneOf``/``anyOf`` too:
        any of their fields may be sent)."""
        schema = self.get(schema)
        if not isinstance(schema, dict) or depth > _DEPTH:
            return {}
        out: dict[str, Any] = {}
        for key in ("allOf", "oneOf", "anyOf"):
            parts = schema.get(key)
            if isinstance(parts, list):
                for part in parts:
                    out.update(self.properties(part, depth + 1))
        props = schema.get("properties")
        if isinstance(props, dict):
            out.update({str(k): self.get(v) for k, v in props.items()})
        return out


def read_api(doc: Any) -> Api:
    """The operations of a parsed description; raises ``DescriptionError``."""
    if not isinstance(doc, dict):
        raise DescriptionError("not an API description: the document is not a mapping")
    version = doc.get("openapi", doc.get("swagger"))
    if version is None:
        raise DescriptionError("not an API description: no 'openapi' or 'swagger' field")
    version = str(version)
    swagger = "openapi" not in doc
    if (swagger and not version.startswith("2")) or (not swagger and not version.startswith("3")):
        raise DescriptionError(f"unsupported description version {version!r} "
                               "(OpenAPI 3.0/3.1 or Swagger 2.0)")
    paths = doc.get("paths", {})
    if not isinstance(paths, dict):
        raise DescriptionError("not an API description: 'paths' is not a mapping")
    refs = _Refs(doc)
    info: dict[str, Any] = doc["info"] if isinstance(doc.get("info"), dict) else {}
    api = Api(str(info.get("title", "")), version,
              _swagger_base(doc) if swagger else _servers_base(doc.get("servers")),
              json_target=AWS_JSON_TARGETS.get(str(info.get("x-serviceName")))
              if info.get("x-providerName") == "amazonaws.com" else None)
    consumes = _strings(doc.get("consumes")) if swagger else ()
    for path, item in paths.items():
        item = refs.get(item)
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(item, dict):
            continue
        shared: list[Any] = item["parameters"] if isinstance(item.get("parameters"), list) else []
        for method in _METHODS:
            op = refs.get(item.get(method))
            if isinstance(op, dict):
                api.operations.append(_operation(refs, path, method, op, shared, swagger,
                                                 consumes))
    return api


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _servers_base(servers: Any) -> str | None:
    if not isinstance(servers, list):
        return None
    for server in servers:
        if not isinstance(server, dict) or not isinstance(server.get("url"), str):
            continue
        variables: dict[str, Any] = (server["variables"] if isinstance(server.get("variables"), dict)
                                     else {})

        def fill(m: re.Match[str], variables: dict[str, Any] = variables) -> str:
            var = variables.get(m.group(1))
            return str(var.get("default", "")) if isinstance(var, dict) else m.group(0)
        url = _VARIABLE.sub(fill, str(server["url"])).rstrip("/")
        if re.match(r"^https://[^/?#\s{}]+(/[^?#\s{}]*)?$", url):
            return url
    for server in servers:  # no https server: take a plain http one
        if isinstance(server, dict) and isinstance(server.get("url"), str):
            url = str(server["url"]).rstrip("/")
            if re.match(r"^https?://[^/?#\s{}]+(/[^?#\s{}]*)?$", url):
                return url
    return None


def _swagger_base(doc: dict[str, Any]) -> str | None:
    host = doc.get("host")
    if not isinstance(host, str) or not host or "{" in host:
        return None
    schemes = _strings(doc.get("schemes"))
    scheme = "https" if "https" in schemes or not schemes else schemes[0]
    base = doc.get("basePath") if isinstance(doc.get("basePath"), str) else ""
    url = f"{scheme}://{host}{base}".rstrip("/")
    return url if re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", url) else None


def gateway_template(path: str) -> tuple[str, tuple[tuple[str, str | None], ...]]:
    """The gateway template of a description path, and the names after ``#``/``?`` with
    the value each must have (None: any; a ``{placeholder}`` is any value too).

    >>> gateway_template("/{Bucket}/{Key+}#uploads")
    ('/{Bucket}/{Key+}', (('uploads', None),))
    >>> gateway_template("/#Action=TerminateInstances")
    ('/', (('Action', 'TerminateInstances'),))
    >>> gateway_template("/v1/{name}:cancel/{file-id}")
    ('/v1/*/{file_id}', ())
    """
    cut = min((i for i in (path.find("#"), path.find("?")) if i >= 0), default=-1)
    extra: tuple[tuple[str, str | None], ...] = ()
    if cut >= 0:
        extra = tuple(_discriminator(part) for part in re.split(r"[&#?]", path[cut + 1:])
                      if part.split("=", 1)[0].rstrip("!"))
        path = path[:cut]
    raw = [s for s in path.split("/") if s not in ("", ".", "..")]
    out: list[str] = []
    names: set[str] = set()
    for i, seg in enumerate(raw):
        m = _NAME.match(seg)
        if m:
            name = _SAFE.sub("_", m.group(1)) or "p"
            if name[0].isdigit():
                name = "p" + name
            while name in names:
                name += "_"
            names.add(name)
            # S3's object {Key} holds "/" (its description does not say {Key+})
            greedy = (m.group(2) == "+" or m.group(1) == "Key") and i == len(raw) - 1 and i > 0
            out.append("{" + name + ("+}" if greedy else "}"))
        elif "{" in seg or "}" in seg or "*" in seg:
            out.append("*")
        else:
            out.append(seg)
    return "/" + "/".join(out), extra


def path_pattern(path: str) -> str | None:
    """The description path as a regular expression over the call's path, when one of
    its segments mixes text and a parameter (a template says only ``*`` there), else
    None.

    >>> path_pattern("/v1/{name}:pause#x")
    '^/v1/[^/]+:pause/?$'
    >>> path_pattern("/v1/{name}") is None
    True
    """
    cut = min((i for i in (path.find("#"), path.find("?")) if i >= 0), default=-1)
    raw = [s for s in (path[:cut] if cut >= 0 else path).split("/")
           if s not in ("", ".", "..")]
    out, mixed = [], False
    for i, seg in enumerate(raw):
        m = _NAME.match(seg)
        if m:
            greedy = (m.group(2) == "+" or m.group(1) == "Key") and i == len(raw) - 1 and i > 0
            out.append(".+" if greedy else "[^/]+")
        elif "{" in seg or "}" in seg or "*" in seg:
            mixed = True
            out.append("[^/]+".join(re.escape(part) for part in re.split(r"\{[^{}]*\}", seg)))
        else:
            out.append(re.escape(seg))
    return "^/" + "/".join(out) + "/?$" if mixed else None


def _discriminator(part: str) -> tuple[str, str | None]:
    """``Action=TerminateInstances`` -> its name and value; ``uploads``, ``lat={lat}`` and
    ``x=`` -> the name and None (present, with any value)."""
    name, _, value = part.partition("=")
    value = value.strip()
    return name.rstrip("!"), value if value and "{" not in value and "}" not in value else None


def _operation(refs: _Refs, path: str, method: str, op: dict[str, Any], shared: list[Any],
               swagger: bool, consumes: tuple[str, ...]) -> Operation:
    template, extra = gateway_template(path)
    own: list[Any] = op["parameters"] if isinstance(op.get("parameters"), list) else []
    params = [p for p in (refs.get(p) for p in shared + own) if isinstance(p, dict)]
    query = tuple(str(p.get("name")) for p in params if p.get("in") == "query")
    headers = {str(p.get("name")).lower() for p in params if p.get("in") == "header"}
    discriminators = tuple(("header", name.lower(), value) if name.lower() in headers
                           or (name.lower().startswith("x-amz-") and name not in query)
                           else ("query", name, value) for name, value in extra
                           if name != "x-id")
    media: tuple[str, ...] = ()
    fields: dict[str, Any] = {}
    if swagger:
        form = [p for p in params if p.get("in") == "formData"]
        body = [p for p in params if p.get("in") == "body"]
        if form or body:
            media = _strings(op.get("consumes")) or consumes or (
                ("application/x-www-form-urlencoded",) if form else ("application/json",))
        for p in form:
            fields[str(p.get("name"))] = p
        for p in body:
            fields.update(refs.properties(p.get("schema")))
    else:
        request = refs.get(op.get("requestBody"))
        content = request.get("content") if isinstance(request, dict) else None
        if isinstance(content, dict):
            media = tuple(str(k) for k in content)
            for entry in content.values():
                entry = refs.get(entry)
                if isinstance(entry, dict):
                    fields.update(refs.properties(entry.get("schema")))
    read_only = [name for name, schema in fields.items()
                 if isinstance(schema, dict) and schema.get("readOnly") is True]
    schemas, described, location = _ok_responses(refs, op, swagger)
    answer: list[str] | None = None
    for response in schemas:
        props = refs.properties(response)
        answer = [*(answer or []), *props]
        read_only += [name for name, schema in props.items()
                      if isinstance(schema, dict) and schema.get("readOnly") is True]
    return Operation(method.upper(), path, template,
                     str(op.get("operationId") or ""), str(op.get("summary") or "")[:200],
                     discriminators, media, tuple(fields), tuple(dict.fromkeys(read_only)),
                     query, op.get("deprecated") is True,
                     tuple(dict.fromkeys(answer)) if answer is not None else None,
                     described and not schemas, location, path_pattern(path))


def _ok_responses(refs: _Refs, op: dict[str, Any], swagger: bool,
                  ) -> tuple[list[Any], bool, bool]:
    """The 2xx answers' schemas, whether any 2xx answer is described, and whether one
    names a Location header."""
    responses = op.get("responses")
    if not isinstance(responses, dict):
        return [], False, False
    out: list[Any] = []
    described = location = False
    for code, response in responses.items():
        response = refs.get(response)
        if not str(code).startswith("2") or not isinstance(response, dict):
            continue
        described = True
        headers = response.get("headers")
        location |= isinstance(headers, dict) and any(str(h).lower() == "location"
                                                      for h in headers)
        if swagger and response.get("schema") is not None:
            out.append(response.get("schema"))
        elif isinstance(response.get("content"), dict):
            out += [refs.get(c).get("schema") for c in response["content"].values()
                    if isinstance(refs.get(c), dict) and refs.get(c).get("schema") is not None]
    return out, described, location
