"""The OpenAPI description of the API: the schemas, the documented responses
of each route and the key parameter, as data. Each route of the table in
kv/http/routes.py names one `doc`: a function of the worker's State (for
examples and limits) and the HTTP method, returning FastAPI's route keywords
(summary, description, responses, ...), plus `params` for the path
parameters it documents.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Path as FastAPIPath
from fastapi.responses import Response

from .. import __version__
from .negotiation import BINARY, JSON, TEXT
from .problems import PROBLEM

if TYPE_CHECKING:
    from .state import State

Doc = Callable[["State", str], dict[str, Any]]

TITLE = "kv"
DESCRIPTION = (
    "A read-only key-value server: GET a key (a UUID, or any UTF-8 string for a string-key table), get its value back. "
    "Values are the bytes of the data file; errors are RFC 9457 problem details."
)
VERSION = __version__

# Documented, not enforced by FastAPI: the table's own check gives the clearer 400 detail.
KEY_PATTERN = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$"
EXAMPLE_KEY = "3479d894-3271-4935-88cf-a06f3cbb80a5"  # when the table is empty

PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


def problem_doc(description: str) -> dict:
    return {"description": description, "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}


def json_object_doc(description: str, properties: dict) -> dict:
    """A response whose body is a JSON object of these properties."""
    return {"description": description, "content": {JSON: {"schema": {"type": "object", "properties": properties}}}}


KEY_RESPONSES = {
    200: {
        "description": "The value: raw bytes (text/plain when UTF-8, else application/octet-stream), or JSON with Accept: application/json",
        "content": {
            TEXT: {"schema": {"type": "string"}},
            BINARY: {"schema": {"type": "string", "format": "binary"}},
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {"key": {"type": "string"}, "value": {"type": "string"}, "value_base64": {"type": "string"}},
                }
            },
        },
        "headers": {"ETag": {"schema": {"type": "string"}}, "X-KV-Generation": {"schema": {"type": "string"}}},
    },
    304: {"description": "Not modified: If-None-Match holds this generation's ETag"},
    400: problem_doc("Malformed key"),
    404: problem_doc("Key not in the table"),
    421: problem_doc("Key belongs to another shard"),
    503: problem_doc("Table corrupt"),
}

BATCH_RESPONSES = {
    200: json_object_doc(
        "Values found (as UTF-8 text, or base64 in values_base64 when not UTF-8) and keys missing",
        {
            "generation": {"type": "string"},
            "values": {"type": "object", "additionalProperties": {"type": "string"}},
            "values_base64": {"type": "object", "additionalProperties": {"type": "string"}},
            "missing": {"type": "array", "items": {"type": "string"}},
        },
    ),
    400: problem_doc("Malformed body or keys"),
    413: problem_doc("More keys than the batch limit"),
    421: problem_doc("Keys of other shards"),
    503: problem_doc("Table corrupt"),
}


STRING_KEY_DESCRIPTION = (
    "`key` is any UTF-8 string of 1 to 1,024 bytes, percent-encoded (RFC 3986: every byte outside the unreserved "
    "characters `A-Z a-z 0-9 - . _ ~` as `%XX`, e.g. `user%3A42` for `user:42`; `%2F` is a slash inside the key, "
    "`+` is a plus). Keys compare byte-exact: no case folding, no Unicode normalisation."
)
UUID_KEY_DESCRIPTION = "`key` is a UUID, 8-4-4-4-12 or 32 hex digits, any case."


def example_key(state: State) -> str:
    if not state.probe_key:
        return EXAMPLE_KEY if state.table.key_kind == "uuid" else "user:42"
    return state.probe_key.decode("utf-8", "replace")


def key_doc(state: State, method: str) -> dict[str, Any]:
    summary, operation_id = ("Check one key (no body)", "head_key") if method == "HEAD" else ("Look up one key", "get_key")
    if state.table.key_kind == "string":  # no pattern: any UTF-8 string is a key
        param = FastAPIPath(description="String key, percent-encoded UTF-8", examples=[example_key(state)])
        description = STRING_KEY_DESCRIPTION
    else:
        param = FastAPIPath(description="UUID key", json_schema_extra={"pattern": KEY_PATTERN}, examples=[example_key(state)])
        description = UUID_KEY_DESCRIPTION
    key = inspect.Parameter("key", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str, default=param)
    return {
        "responses": KEY_RESPONSES,
        "response_class": Response,
        "summary": summary,
        "operation_id": operation_id,
        "description": description,
        "params": [key],
    }


def json_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """The openapi_extra of a route that takes a required JSON request body."""
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema, "example": example}}}}


def batch_doc(state: State, method: str) -> dict[str, Any]:
    if state.table.key_kind == "string":
        items, other = {"type": "string", "minLength": 1}, "user:43"
    else:
        items, other = {"type": "string", "pattern": KEY_PATTERN}, "f8a24bb8-eff8-41dc-929b-10b4c3e49e05"
    body = json_body(
        {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": items, "maxItems": state.max_batch}}},
        example={"keys": [example_key(state), other]},
    )
    return {
        "responses": BATCH_RESPONSES,
        "summary": "Look up many keys",
        "openapi_extra": body,
        "description": f"Up to {state.max_batch} keys; all values come from one table generation.",
    }


def doc(**keywords: Any) -> Doc:
    """The doc of a route that documents the same for every state and method."""
    return lambda state, method: keywords


HIDDEN = doc(include_in_schema=False)
STATS_DOC = doc(summary="Statistics, summed over all workers")
HEALTHZ_DOC = doc(summary="The process is alive")
READYZ_DOC = doc(summary="The table is open and reads back", responses={503: problem_doc("Not ready")})
METRICS_DOC = doc(
    summary="Prometheus metrics, all workers",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)


WRITE_RESPONSES = {
    200: json_object_doc(
        "Committed (fsynced; every request any worker starts from now on sees it)",
        {
            "generation": {"type": "string"},
            "sets": {"type": "integer"},
            "deletes": {"type": "integer"},
            "missing": {"type": "array", "items": {"type": "string"}},
        },
    ),
    400: problem_doc("Malformed body, key or value: nothing was written"),
    401: problem_doc("No write token (WWW-Authenticate: Bearer)"),
    403: problem_doc("Not the write token"),
    405: problem_doc("This server takes no writes (kv serve --root DIR --writable does)"),
    413: problem_doc("More keys than the batch limit, or a value too large"),
}


def write_doc(state: State, method: str) -> dict[str, Any]:
    if state.writer is None:  # a read-only server: the route only answers 405
        return {"include_in_schema": False}
    body = json_body(
        {
            "type": "object",
            "properties": {
                "set": {"type": "object", "additionalProperties": {"type": "string"}},
                "set_base64": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
                "delete": {"type": "array", "items": {"type": "string"}},
            },
        },
        example={"set": {example_key(state): "new value"}, "delete": []},
    )
    return {
        "responses": WRITE_RESPONSES,
        "summary": "Write many keys at once, all or nothing",
        "openapi_extra": body,
        "description": f"Up to {state.max_batch} keys in all; needs `Authorization: Bearer` with the write token. "
        "PUT and DELETE /v1/keys/{key} write one key (the value is the request body). "
        "See docs/WRITES.md.",
    }


KEY_WRITE_RESPONSES = {
    200: WRITE_RESPONSES[200],
    400: problem_doc("Malformed key or value: nothing was written"),
    401: WRITE_RESPONSES[401],
    403: WRITE_RESPONSES[403],
    404: problem_doc("DELETE of a key that is not there: nothing was written"),
    405: WRITE_RESPONSES[405],
    413: problem_doc("A value too large"),
}


def key_write_doc(state: State, method: str) -> dict[str, Any]:
    if state.writer is None:
        return {"include_in_schema": False}
    doc = key_doc(state, "GET")
    if method == "PUT":
        summary, extra = (
            "Set one key",
            {"openapi_extra": {"requestBody": {"required": True, "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}}}}},
        )
    else:
        summary, extra = "Delete one key", {}
    return {
        "responses": KEY_WRITE_RESPONSES,
        "summary": summary,
        "operation_id": f"{method.lower()}_key",
        "description": "Needs `Authorization: Bearer` with the write token (kv serve --writable); the value is the "
        "request body. Answers once the write is durable and visible to every reader. " + doc["description"],
        "params": doc["params"],
        **extra,
    }
