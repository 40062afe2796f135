"""Rule drafts from an API's operations: reads, writes, their capture and undo.

One draft per path template (and query or header that tells operations
apart) and method set. What the gateway does with a draft is the journal's
ordinary inference (``gateway.core.journal``) unless the draft says more:

- reads (GET, HEAD, and POSTs that only read: search, list, query, count,
  preview, ``auth.test``, computations such as chat completions) are allowed,
  as ``effect: read``;
- PUT and PATCH capture the same template's GET and are undone by a PUT of
  the prior state (PATCH of the prior fields when there is no PUT); a PUT
  with no GET but a DELETE on the same template (a star, a lock) is undone
  by that DELETE;
- DELETE is held for approval, captured, and undone by a POST of the prior
  state to the collection (or a PUT of it to the same template);
- a POST to a collection whose item template has a DELETE is undone by that
  DELETE of the id the answer names; a POST to an item that has a GET
  (Stripe's updates) captures it and posts the prior fields back; a POST
  action with an ``un``-action beside it (``archive``/``unarchive``) is undone
  by that;
- anything else is ``undo: none``, with the reason.

``Draft.inverse`` names the operation an undo calls, so a test can check it
exists in the description.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from gateway.core.openapi.document import Api, Operation

_TOKEN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
# the verb of an operation that only reads, and the last path segment of one
READ_VERBS = frozenset({"search", "list", "query", "count", "preview", "get", "info",
                        "history", "replies", "test", "lookup", "retrieve", "fetch", "find",
                        "read", "validate", "estimate", "describe", "check", "members"})
READ_SEGMENTS = frozenset({"search", "query", "count", "preview", "list", "read", "lookup",
                           "validate", "estimate", "test", "introspect", "batch-read",
                           "batch_read"})
# results computed for the caller that leave nothing behind to undo
COMPUTE = frozenset({"completion", "completions", "embedding", "embeddings", "moderation",
                     "moderations", "generations", "transcription", "transcriptions",
                     "translation", "translations", "tokenize", "tokenization", "detect",
                     "analyze", "classify", "classifications", "render", "rerank",
                     "answers", "edits", "predict", "predictions", "speech"})
WRITE_WORDS = frozenset({"create", "update", "delete", "remove", "set", "add", "post", "put",
                         "patch", "send", "cancel", "archive", "unarchive", "invite", "kick",
                         "leave", "join", "rename", "revoke", "approve", "upload", "close",
                         "open", "mark", "reset", "restore", "enable", "disable", "write",
                         "publish", "import", "merge", "move", "copy", "start", "stop",
                         "execute", "run", "pay", "refund", "capture", "confirm"})


@dataclass(slots=True)
class Draft:
    id: str
    methods: tuple[str, ...]
    path: str
    operations: tuple[Operation, ...]
    write: bool
    action: str = "allow"  # allow | hold
    # "read": a POST (or RPC-style call) that only reads; "write": a GET that writes
    effect: str | None = None
    when: str | None = None
    capture: str | None = None  # the template GET for the prior state
    undo: dict[str, Any] | str | None = None  # explicit undo, "none", or None (inferred)
    inverse: tuple[str, str] | None = None  # (method, template) the undo calls
    why: str = ""  # the comment above the rule

    @property
    def undoable(self) -> bool:
        return self.write and self.inverse is not None


@dataclass(frozen=True, slots=True)
class Summary:
    operations: int
    reads: int
    writes: int
    captured: int
    undoable: int
    irreversible: int

    def as_dict(self) -> dict[str, int]:
        return {"operations": self.operations, "reads": self.reads, "writes": self.writes,
                "captured": self.captured, "undoable": self.undoable,
                "irreversible": self.irreversible}


def words(text: str) -> list[str]:
    """``createChatCompletion`` -> create, chat, completion; ``auth_test`` -> auth, test."""
    return [w.lower() for w in _TOKEN.findall(text)]


def rpc_style(template: str) -> bool:
    """Slack's ``/chat.postMessage``: one method name per path, no parameters."""
    last = template.rstrip("/").rsplit("/", 1)[-1]
    return "." in last and "{" not in template and "*" not in template


# where an API names the operation a call makes (AWS's query and JSON protocols,
# Flickr's ``?method=``): the name, not the HTTP method, says whether it writes
ACTION_KEYS = frozenset({"action", "operation", "op", "method", "x-amz-target"})
# an operation named so destroys: held for a person, as a DELETE is
DESTROY_VERBS = frozenset({"delete", "terminate", "remove", "destroy", "purge", "deregister",
                           "drop"})


def action_name(op: Operation) -> str | None:
    """The operation a call names in its query or headers (``TerminateInstances`` of
    ``?Action=TerminateInstances``, ``DeleteTable`` of ``X-Amz-Target:
    DynamoDB_20120810.DeleteTable``) or in an RPC-style path (``delete`` of
    ``/chat.delete``), else None."""
    for _, name, value in op.discriminators:
        if value is not None and name.lower() in ACTION_KEYS:
            return value.rsplit(".", 1)[-1]
    if rpc_style(op.template):
        return op.template.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    return None


def _names_a_read(name: str) -> bool:
    """``DescribeInstances``, ``history``: a read verb first and no write word after."""
    verb = words(name)
    return bool(verb) and verb[0] in READ_VERBS and not set(verb[1:]) & WRITE_WORDS


def reads_only(op: Operation) -> bool:
    """Whether an operation only reads. Where the call names its operation (``?Action=``,
    ``X-Amz-Target``, an RPC-style path such as ``/apps.uninstall``) that name decides,
    whatever the HTTP method: descriptions call writes GETs (Slack's ``apps.uninstall``,
    AWS's ``GET /?Action=TerminateInstances``). Else GET and HEAD read, and a POST when
    its names say so."""
    action = action_name(op)
    if action is not None:
        return _names_a_read(action)
    last = op.template.rstrip("/").rsplit("/", 1)[-1]
    if op.method in ("GET", "HEAD", "OPTIONS"):
        return True
    if op.method != "POST":
        return False
    names = words(op.operation_id) or words(op.summary)  # "Search contacts" without an id
    segment = last.lower() if not last.startswith("{") else ""
    if segment in READ_SEGMENTS or segment in COMPUTE:
        return True
    if set(names) & COMPUTE and not set(names) & (WRITE_WORDS - {"create", "post"}):
        return True
    return bool(names) and names[0] in READ_VERBS and not set(names) & WRITE_WORDS


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "rule"


def _specificity(draft: Draft) -> tuple[Any, ...]:
    """Literal segments before parameters, a discriminated rule before the plain one."""
    key = []
    for seg in draft.path.strip("/").split("/"):
        if seg.endswith("+}"):
            key.append((3, ""))
        elif seg.startswith("{") or seg == "*":
            key.append((2, ""))
        else:
            key.append((0, seg))
    return (key, 0 if draft.when else 1, draft.write, draft.methods)


class _Index:
    """Which (method, template) operations the description has."""

    def __init__(self, ops: list[Operation]) -> None:
        self.plain: dict[str, dict[str, Operation]] = defaultdict(dict)
        for op in ops:
            if not op.discriminators:
                self.plain[_shape(op.template)].setdefault(op.method, op)

    def has(self, method: str, template: str) -> str | None:
        """The description's spelling of ``template`` when it has ``method`` there (a GET
        only when it answers with a body: one that says yes or no is not a state)."""
        op = self.plain.get(_shape(template), {}).get(method)
        if op is None or (method == "GET" and op.empty):
            return None
        return op.template

    def items_under(self, template: str) -> list[str]:
        """Item templates one parameter below ``template`` (``/customers/{id}``)."""
        base = _shape(template).rstrip("/")
        return [ops[next(iter(ops))].template for shape, ops in self.plain.items()
                if shape.rsplit("/", 1)[0] == base and shape.rsplit("/", 1)[-1] == "{}"]


def _shape(template: str) -> str:
    """A template with its parameter names erased: ``/a/{x}`` and ``/a/{y}`` are one."""
    return re.sub(r"\{[^}]*\}", "{}", template)


def _rename(template: str, like: str) -> str:
    """``like`` spelled with ``template``'s parameter names (both have one shape)."""
    names = iter(re.findall(r"\{[^}]*\}", template))
    return re.sub(r"\{[^}]*\}", lambda m: next(names, m.group(0)), like)


def _when(op: Operation, json_target: str | None = None) -> str | None:
    """What tells the operation apart: each name present and, where the description
    gives one, with its value (``&&`` is false before the lookup when it is absent).

    An operation named in the query (``?Action=``, ``?method=``) is named in a form body
    just as well: AWS's query protocol reads both as one set of parameters, and its SDKs
    (botocore) send ``POST /`` with ``Action=...`` in the body. So such a ``when`` holds
    for either place (a body that names it beside a query that does is refused before
    any rule runs: ``gateway.core.body.named_twice``). A service whose SDKs now speak
    AWS's JSON protocol (``json_target``: SQS) names the same action in
    ``X-Amz-Target`` too (``AmazonSQS.SendMessage``), a third place."""
    parts = _terms(op, "query")
    if op.pattern is not None:  # ``/v1/*`` is ``/v1/{name}:pause`` only with this
        parts.append(f"request.path.matches({json_str(op.pattern)})")
    actions = [value for where, name, value in op.discriminators
               if where == "query" and value is not None and name.lower() in ACTION_KEYS]
    if not actions:
        return " && ".join(parts) or None
    posted = ["type(request.body) == map", *_terms(op, "body")]  # a form body: a map
    if op.pattern is not None:
        posted.append(parts[-1])
    when = f"({' && '.join(parts)}) || ({' && '.join(posted)})"
    if json_target is None or len(op.discriminators) != 1:
        return when
    target = json_str(f"{json_target}.{actions[0]}")
    return (f"{when} || ('x-amz-target' in request.headers && "
            f"request.headers['x-amz-target'] == {target})")


def _terms(op: Operation, query: str) -> list[str]:
    """``op``'s discriminators as ``when`` terms, its query names read from ``query``
    (``request.query``, or ``request.body`` for a form body)."""
    parts = []
    for where, name, value in op.discriminators:
        field = f"request.{query if where == 'query' else 'headers'}"
        parts.append(f"{json_str(name)} in {field}")
        if value is not None:
            parts.append(f"{field}[{json_str(name)}] == {json_str(value)}")
    return parts


def json_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def infer(api: Api) -> list[Draft]:
    """Rule drafts for every operation of ``api``, most specific template first."""
    index = _Index(api.operations)
    groups: dict[tuple[str, tuple[tuple[str, str, str | None], ...], str | None],
                 list[Operation]] = defaultdict(list)
    shapes: dict[str, str] = {}
    for op in api.operations:
        if op.method == "OPTIONS":
            continue
        template = shapes.setdefault(_shape(op.template), op.template)
        groups[(template, op.discriminators, op.pattern)].append(op)
    drafts: list[Draft] = []
    for (template, _, _), ops in groups.items():
        reads = [op for op in ops if reads_only(op)]
        if reads:
            methods = {op.method for op in reads}
            if "GET" in methods:
                methods.add("HEAD")
            posted = any(op.method != "GET" and op.method != "HEAD" for op in reads)
            if rpc_style(template):  # SDKs (slack_sdk) send every method as a POST
                methods.add("POST")
                posted = True
            drafts.append(Draft("", tuple(m for m in ("GET", "HEAD", "POST", "PUT", "PATCH",
                                                      "DELETE") if m in methods),
                                template, tuple(reads), False,
                                effect="read" if posted else None,
                                when=_when(reads[0], api.json_target),
                                why="reads" if not posted else
                                "only reads (its name says so): not journaled, not frozen"))
        for op in ops:
            if op in reads or (rpc_style(template) and reads):
                continue
            draft = _write(op, template, index, api.json_target)
            if rpc_style(template) and op.method == "GET" and \
                    not any(other.method == "POST" for other in ops):
                draft.methods = ("GET", "POST")  # SDKs POST every method, writes too
            drafts.append(draft)
    drafts.sort(key=_specificity)
    used: set[str] = set()
    for draft in drafts:
        base = _slug(draft.operations[0].operation_id) if len(draft.operations) == 1 else ""
        base = base or _slug(f"{'read' if not draft.write else draft.methods[0]} {draft.path}")
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        draft.id = name
    return drafts


def _write(op: Operation, template: str, index: _Index, json_target: str | None) -> Draft:
    draft = _infer_write(op, template, index, json_target)
    if draft.action == "hold" and not draft.why.startswith("held"):
        draft.why = f"held: {action_name(op)} destroys; " + draft.why
    if "*" in template.split("/") and (draft.capture or isinstance(draft.undo, dict)):
        draft.capture, draft.undo, draft.inverse = None, "none", None
        draft.why = ("no undo: a path segment mixes text and a parameter, which a capture "
                     "or undo path cannot name")
    return draft


def _infer_write(op: Operation, template: str, index: _Index,
                 json_target: str | None = None) -> Draft:
    draft = Draft("", (op.method,), template, (op,), True, when=_when(op, json_target))
    if op.method in ("GET", "HEAD"):  # a GET that names a write (the query APIs)
        draft.effect = "write"
    action = action_name(op)
    if action is not None and words(action)[:1] and words(action)[0] in DESTROY_VERBS:
        draft.action = "hold"  # TerminateInstances, DeleteTable: as a DELETE
    queried = any(where == "query" for where, _, _ in op.discriminators)
    get = index.has("GET", template)
    last = template.rstrip("/").rsplit("/", 1)
    parent = last[0] if len(last) == 2 and last[0] else None
    if queried:
        draft.undo = "none"
        draft.why = ("no undo: the operation is told apart by its query "
                     f"({', '.join(n for _, n, _ in op.discriminators)}), which a capture "
                     "path cannot carry")
        return draft
    if op.method in ("PUT", "PATCH"):
        if get:
            draft.capture = template
            put = index.has("PUT", template)
            if put:  # the journal's own undo: PUT the captured state back
                draft.inverse = ("PUT", template)
                draft.why = f"captured by GET {template}; undone by PUT of the prior state"
                if op.method == "PUT" and index.has("DELETE", template) is None:
                    draft.undo = {"method": "PUT", "path": template, "body": "prior"}
            elif _fields_ok(op):
                draft.undo = {"method": "PATCH", "path": template, "body": "prior_fields",
                              "omit": _read_only(op, template, index)}
                draft.inverse = ("PATCH", template)
                draft.why = f"captured by GET {template}; undone by PATCH of the prior fields"
            else:
                draft.undo = "none"
                draft.why = "no undo: the body is neither JSON nor a form, so its fields are unknown"
            return draft
        delete = index.has("DELETE", template)
        if op.method == "PUT" and delete:
            draft.capture = None
            draft.undo = {"method": "DELETE", "path": template}
            draft.inverse = ("DELETE", template)
            draft.why = f"no GET to capture; undone by DELETE {template}"
            return draft
        draft.undo = "none"
        draft.why = f"no undo: the description has no GET {template} that reads its state"
        return draft
    if op.method == "DELETE":
        draft.action = "hold"
        if get:
            draft.capture = template
            create = index.has("POST", parent) if parent and template.endswith("}") else None
            if create and not _json_ok(index.plain[_shape(create)]["POST"]):
                create = None  # the journal posts the prior state back as JSON
            put = index.has("PUT", template)
            if put:
                draft.undo = {"method": "PUT", "path": template, "body": "prior"}
                draft.inverse = ("PUT", template)
                draft.why = f"held; captured by GET {template}; undone by PUT of the prior state"
            elif create and parent:
                draft.inverse = ("POST", parent)
                draft.why = (f"held; captured by GET {template}; undone by POST {parent} of "
                             "the prior state (a new id)")
            else:
                draft.undo = "none"
                draft.why = f"held; no undo: no POST {parent or template} nor PUT {template} puts it back"
            return draft
        put = index.has("PUT", template)
        if put:
            draft.undo = {"method": "PUT", "path": template}
            draft.inverse = ("PUT", template)
            draft.why = f"held; no GET to capture; undone by PUT {template}"
            return draft
        draft.undo = "none"
        draft.why = f"held; no undo: the description has no GET {template} to capture what it deletes"
        return draft
    # POST
    if template.endswith("}") and get:  # an update by POST (Stripe)
        if _fields_ok(op):
            draft.capture = template
            draft.undo = {"method": "POST", "path": template, "body": "prior_fields",
                          "omit": _read_only(op, template, index)}
            draft.inverse = ("POST", template)
            draft.why = (f"captured by GET {template}; undone by POST of the prior values of "
                         "the fields sent" + (" (form fields)" if op.form else ""))
            return draft
    items = [t for t in index.items_under(template) if index.has("DELETE", t)]
    if items and (op.answer is None or "id" in op.answer or op.location):  # an id to DELETE
        draft.inverse = ("DELETE", items[0])
        draft.why = f"undone by DELETE {items[0]} of the id the answer names"
        return draft
    if parent and not rpc_style(template):
        verb = last[1]
        pair = verb[2:] if verb.startswith("un") else "un" + verb
        sibling = index.has("POST", f"{parent}/{pair}")
        if sibling and "{" not in verb:
            draft.undo = {"method": "POST", "path": _rename(template, sibling)}
            draft.inverse = ("POST", sibling)
            if index.has("GET", parent):
                draft.capture = _rename(template, index.has("GET", parent) or parent)
            draft.why = f"undone by POST {sibling}"
            return draft
        owner = index.has("GET", parent) if "{" in parent else None
        if owner:
            draft.capture = _rename(template, owner)
    draft.undo = "none"
    draft.why = ("no undo: the description has no call that reverses it"
                 if not rpc_style(template) else
                 "no undo: the inverse call would need values the answer returns")
    return draft


def _read_only(op: Operation, template: str, index: _Index) -> list[str] | None:
    """Fields the description marks readOnly (in this body or the GET's answer): an
    undo never sends them back. None when there are none."""
    get = index.plain.get(_shape(template), {}).get("GET")
    names = sorted({*op.read_only, *(get.read_only if get is not None else ())})
    return names or None


def _fields_ok(op: Operation) -> bool:
    """Fields can be sent back: a JSON or form body (or none described)."""
    return not op.media or any("json" in m or "form-urlencoded" in m for m in op.media)


def _json_ok(op: Operation) -> bool:
    return not op.media or any("json" in m for m in op.media)


def summarize(drafts: list[Draft]) -> Summary:
    reads = sum(len(d.operations) for d in drafts if not d.write)
    writes = [d for d in drafts if d.write]
    captured = sum(1 for d in writes if d.capture)
    undoable = sum(1 for d in writes if d.undoable)
    return Summary(reads + len(writes), reads, len(writes), captured, undoable,
                   len(writes) - undoable)


