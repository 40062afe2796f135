"""Policies from an API's own description: reading (both versions, ``$ref``) and inferring."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.core.openapi import infer, read_api, render, summarize
from gateway.core.openapi.document import gateway_template
from gateway.core.openapi.infer import reads_only
from gateway.core.policy.loader import load_policy_set
from gateway.errors import DescriptionError


def _crud(**extra: Any) -> dict[str, Any]:
    """A JSON CRUD API in OpenAPI 3, with its schemas behind $refs (one of them cyclic)."""
    return {
        "openapi": "3.1.0", "info": {"title": "Shop"},
        "servers": [{"url": "https://{region}.shop.test/v1",
                     "variables": {"region": {"default": "eu"}}}],
        "components": {
            "schemas": {"Item": {"type": "object", "properties": {
                "id": {"type": "string", "readOnly": True}, "name": {"type": "string"},
                "parent": {"$ref": "#/components/schemas/Item"}}},
                "Loop": {"$ref": "#/components/schemas/Loop"}},
            "requestBodies": {"Item": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Item"}}}}},
            "parameters": {"id": {"name": "id", "in": "path", "required": True}}},
        "paths": {
            "/items": {"get": {"operationId": "listItems"},
                       "post": {"operationId": "createItem",
                                "requestBody": {"$ref": "#/components/requestBodies/Item"}}},
            "/items/search": {"post": {"operationId": "searchItems"}},
            "/items/{id}": {
                "parameters": [{"$ref": "#/components/parameters/id"}],
                "get": {"operationId": "getItem"},
                "patch": {"operationId": "updateItem",
                          "requestBody": {"$ref": "#/components/requestBodies/Item"}},
                "delete": {"operationId": "deleteItem"}},
            "/items/{id}/archive": {"post": {"operationId": "archiveItem"}},
            "/items/{id}/unarchive": {"post": {"operationId": "unarchiveItem"}},
            "/loops": {"post": {"operationId": "loop", "requestBody": {"content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Loop"}}}}}},
            **extra},
    }


def _rules(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    api = read_api(doc)
    drafts = infer(api)
    text = render(api, drafts, summarize(drafts), "shop", api.base_url or "https://x.test", "t")
    policy_set, problems = load_policy_set({"shop.yaml": text}, {})
    assert problems == [] and policy_set is not None
    return {r["id"]: r for r in yaml.safe_load(text)["rules"]}


def test_a_json_crud_api() -> None:
    api = read_api(_crud())
    assert api.base_url == "https://eu.shop.test/v1"
    create = next(op for op in api.operations if op.operation_id == "createItem")
    assert create.fields == ("id", "name", "parent") and create.read_only == ("id",)
    rules = _rules(_crud())
    assert rules["listitems"]["match"] == {"methods": ["GET", "HEAD"], "path": "/items"}
    assert rules["searchitems"]["effect"] == "read"
    assert "undo" not in rules["createitem"]  # the journal DELETEs the id the answer names
    assert rules["updateitem"]["capture"] == {"path": "/items/{id}"}
    # the description marks id readOnly: a compensating PATCH never sends it
    assert rules["updateitem"]["undo"] == {"method": "PATCH", "path": "/items/{id}",
                                           "body": "prior_fields", "omit": ["id"]}
    assert rules["deleteitem"]["action"] == "hold"
    assert rules["deleteitem"]["approval"]["answer"] == "error"
    assert rules["archiveitem"]["undo"] == {"method": "POST", "path": "/items/{id}/unarchive"}
    assert rules["loop"]["undo"] == "none"
    order = list(rules)
    assert order.index("searchitems") < order.index("getitem")  # literal before {id}
    summary = summarize(infer(api))
    assert summary.as_dict() == {"operations": 9, "reads": 3, "writes": 6, "captured": 4,
                                 "undoable": 5, "irreversible": 1}


def test_swagger_2_with_a_form_api() -> None:
    doc = {"swagger": "2.0", "host": "api.pay.test", "basePath": "/v1", "schemes": ["https"],
           "consumes": ["application/x-www-form-urlencoded"],
           "paths": {"/customers/{customer}": {
               "get": {"operationId": "GetCustomer"},
               "post": {"operationId": "PostCustomer", "parameters": [
                   {"name": "customer", "in": "path"}, {"name": "email", "in": "formData"},
                   {"name": "metadata", "in": "formData"}]},
               "delete": {"operationId": "DeleteCustomer"}}}}
    api = read_api(doc)
    assert api.base_url == "https://api.pay.test/v1"
    post = next(op for op in api.operations if op.method == "POST")
    assert post.form and post.fields == ("email", "metadata")
    rules = _rules(doc)
    assert rules["postcustomer"]["undo"] == {"method": "POST", "path": "/customers/{customer}",
                                             "body": "prior_fields"}
    # the description has no call that puts a deleted customer back
    assert rules["deletecustomer"]["undo"] == "none"


@pytest.mark.parametrize(("path", "template", "extra"), [
    ("/{Bucket}/{Key}", "/{Bucket}/{Key+}", ()),
    ("/{Bucket}/{Key}#uploadId", "/{Bucket}/{Key+}", (("uploadId", None),)),
    ("/{Bucket}?cors&x-id=GetCors", "/{Bucket}", (("cors", None), ("x-id", "GetCors"))),
    ("/#Action=TerminateInstances", "/", (("Action", "TerminateInstances"),)),
    ("/alerts?lat={lat}&lon=", "/alerts", (("lat", None), ("lon", None))),
    ("/files/{file-id}/{file-id}", "/files/{file_id}/{file_id_}", ()),
    ("/v1/{name}:cancel", "/v1/*", ()),
    ("/a//b/", "/a/b", ()),
])
def test_description_paths_become_templates(
        path: str, template: str, extra: tuple[tuple[str, str | None], ...]) -> None:
    assert gateway_template(path) == (template, extra)


def test_operations_told_apart_by_the_query_get_a_when_and_no_undo() -> None:
    rules = _rules({"openapi": "3.0.0", "servers": [{"url": "https://s3.test"}], "paths": {
        "/{Bucket}#cors": {"get": {"operationId": "GetCors"}, "put": {"operationId": "PutCors"}},
        "/{Bucket}": {"get": {"operationId": "List"}, "put": {"operationId": "CreateBucket"},
                      "delete": {"operationId": "DeleteBucket"}}}})
    assert rules["putcors"]["match"]["when"] == "'cors' in request.query"
    assert rules["putcors"]["undo"] == "none"
    assert list(rules).index("putcors") < list(rules).index("createbucket")


def test_an_rpc_method_that_deletes_is_held() -> None:
    rules = _rules({"openapi": "3.0.0", "servers": [{"url": "https://x.test"}], "paths": {
        "/chat.delete": {"post": {"operationId": "chat_delete"}},
        "/files.remove": {"get": {"operationId": "files_remove"}},
        "/chat.postMessage": {"post": {"operationId": "chat_postMessage"}}}})
    assert rules["chat-delete"]["action"] == "hold"
    assert rules["files-remove"]["action"] == "hold"
    assert rules["files-remove"]["match"]["methods"] == ["GET", "POST"]
    assert rules["chat-postmessage"]["action"] == "allow"


def test_custom_methods_that_share_a_template_get_rules_of_their_own() -> None:
    """``/v1/{name}:pause`` and ``/v1/{p}:predict`` are both ``/v1/*``: each rule checks
    the whole path, so the read (predict) says nothing of the write (pause)."""
    rules = _rules({"openapi": "3.0.0", "servers": [{"url": "https://x.test"}], "paths": {
        "/v1/{p}:predict": {"post": {"operationId": "predict"}},
        "/v1/{name}:pause": {"post": {"operationId": "pause"}}}})
    assert rules["predict"]["effect"] == "read"
    assert rules["predict"]["match"] == {"methods": ["POST"], "path": "/v1/*", "when":
                                         "request.path.matches('^/v1/[^/]+:predict/?$')"}
    assert "effect" not in rules["pause"] and rules["pause"]["undo"] == "none"
    assert rules["pause"]["match"]["when"] == "request.path.matches('^/v1/[^/]+:pause/?$')"


def test_operations_named_by_a_header_or_the_query_are_judged_by_that_name() -> None:
    """AWS's JSON and query APIs: every operation on ``/``, named by ``X-Amz-Target`` or
    ``Action`` (a GET included); each gets a rule of its own that checks the name."""
    target = {"name": "X-Amz-Target", "in": "header"}
    rules = _rules({"openapi": "3.0.0", "servers": [{"url": "https://aws.test"}], "paths": {
        "/#X-Amz-Target=DynamoDB_20120810.DescribeTable": {"post": {
            "operationId": "DescribeTable", "parameters": [target]}},
        "/#X-Amz-Target=DynamoDB_20120810.DeleteTable": {"post": {
            "operationId": "DeleteTable", "parameters": [target]}},
        "/#Action=DescribeInstances": {"get": {"operationId": "GET_DescribeInstances"},
                                       "post": {"operationId": "POST_DescribeInstances"}},
        "/#Action=RunInstances": {"get": {"operationId": "GET_RunInstances"}}}})
    assert rules["describetable"]["effect"] == "read"
    assert rules["describetable"]["match"]["when"] == (
        "'x-amz-target' in request.headers && "
        "request.headers['x-amz-target'] == 'DynamoDB_20120810.DescribeTable'")
    assert rules["deletetable"]["action"] == "hold" and "effect" not in rules["deletetable"]
    read = next(r for r in rules.values() if "DescribeInstances" in r["match"].get("when", ""))
    assert read["match"]["methods"] == ["GET", "HEAD", "POST"] and read["effect"] == "read"
    run = rules["get-runinstances"]
    assert run["effect"] == "write" and run["action"] == "allow" and run["undo"] == "none"
    assert run["match"]["when"] == (  # in the query, or a form body (botocore sends that)
        "('Action' in request.query && request.query['Action'] == 'RunInstances') || "
        "(type(request.body) == map && 'Action' in request.body && "
        "request.body['Action'] == 'RunInstances')")


@pytest.mark.parametrize(("method", "path", "op_id", "read"), [
    ("POST", "/auth.test", "auth_test", True),
    ("POST", "/conversations.history", "conversations_history", True),
    ("POST", "/chat.postMessage", "chat_postMessage", False),
    ("POST", "/chat/completions", "createChatCompletion", True),
    ("POST", "/embeddings", "createEmbedding", True),
    ("POST", "/files", "createFile", False),
    ("POST", "/crm/v3/objects/contacts/search", "post-search", True),
    ("POST", "/v1/test_helpers/test_clocks", "PostTestHelpersTestClocks", False),
    ("POST", "/v1/refunds", "PostRefunds", False),
    ("PUT", "/things/{id}", "listThings", False),
])
def test_which_posts_only_read(method: str, path: str, op_id: str, read: bool) -> None:
    op = read_api({"openapi": "3.0.0", "paths": {path: {method.lower(): {
        "operationId": op_id}}}}).operations[0]
    assert reads_only(op) is read


@pytest.mark.parametrize(("doc", "message"), [
    ([1, 2], "not a mapping"),
    ({"info": {}}, "no 'openapi' or 'swagger'"),
    ({"openapi": "4.0"}, "unsupported description version '4.0'"),
    ({"swagger": "2.0", "paths": []}, "'paths' is not a mapping"),
])
def test_what_is_not_a_description(doc: Any, message: str) -> None:
    with pytest.raises(DescriptionError, match=message):
        read_api(doc)


def test_a_yes_or_no_get_and_an_answer_without_an_id_undo_nothing() -> None:
    """GitHub's merge: its GET answers 204 or 404 (no state to put back); adding labels
    answers the label list, no id of something created to DELETE."""
    no_body = {"responses": {"204": {"description": "merged"}}}
    labels = {"responses": {"200": {"content": {"application/json": {"schema": {
        "type": "array", "items": {"type": "object"}}}}}}}
    rules = _rules({"openapi": "3.0.0", "servers": [{"url": "https://gh.test"}], "paths": {
        "/pulls/{n}/merge": {"get": {"operationId": "checkMerged", **no_body},
                             "put": {"operationId": "merge"}},
        "/issues/{n}/labels": {"post": {"operationId": "addLabels", **labels}},
        "/issues/{n}/labels/{name}": {"delete": {"operationId": "removeLabel"}},
        "/user/starred/{repo}": {"get": {"operationId": "isStarred", **no_body},
                                 "put": {"operationId": "star"},
                                 "delete": {"operationId": "unstar"}}}})
    assert rules["merge"]["undo"] == "none" and "capture" not in rules["merge"]
    assert rules["addlabels"]["undo"] == "none"
    assert rules["star"]["undo"] == {"method": "DELETE", "path": "/user/starred/{repo}"}


def test_a_post_without_an_operation_id_is_judged_by_its_summary() -> None:
    doc = {"openapi": "3.0.0", "paths": {
        "/contacts/lookup-by-email": {"post": {"summary": "Find contacts by email"}},
        "/contacts/bulk": {"post": {"summary": "Create many contacts"}}}}
    found, made = read_api(doc).operations
    assert reads_only(found) and not reads_only(made)
