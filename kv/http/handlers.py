"""What each route answers, as plain functions of the worker's State and the
request: the table in kv/http/routes.py names them, kv/http/app.py serves
them through FastAPI, and the fast path (kv/http/fastpath.py) calls
`batch_from_body` and reproduces `key_response` for plain hits.

Handlers return Response objects (never dicts for FastAPI to encode): what
they answer is exactly what they build.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .. import metrics
from ..errors import InvalidKey, TableCorrupt
from ..keys import SHARD_REDIRECT, shard_of, string_shard_of
from ..speedups import unquote_bytes
from .negotiation import JSON, content_type, etag_matches, mentions_json, wants_json
from .problems import problem

if TYPE_CHECKING:
    from .state import State

KEY_PATH = "/v1/keys/{key}"
KEY_PREFIX = KEY_PATH.partition("{")[0].encode()  # b"/v1/keys/": keys route on the raw path from here
OPENAPI_PATH = "/openapi.json"
STATIC_PATH = "/static-docs"
_unquote = unquote_bytes()  # percent-decoding of raw key paths (C when built)
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


# -- keys ---------------------------------------------------------------------------------


def get_key(state: State, request: Request) -> Response:
    """GET and HEAD /v1/keys/{key}, for direct callers of the FastAPI app (the
    fast path calls key_from_scope itself: FastAPI routes on the decoded path)."""
    return key_from_scope(state, request.scope)


def key_from_scope(state: State, scope: Mapping[str, Any]) -> Response:
    """GET and HEAD /v1/keys/{key}: the key is the rest of the RAW path after
    the prefix, percent-decoded (RFC 3986: "%2F" is a slash inside the key,
    "+" is a plus). For a string table its bytes must be UTF-8; for a UUID
    table they are decoded as the ASGI server decodes `path`, so UUID answers
    are as they always were."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw = raw.partition(b"?")[0][len(KEY_PREFIX) :]  # some test clients leave the query in raw_path
    kb = _unquote(raw) if b"%" in raw else raw
    accept, if_none_match = "", None
    for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
        if name == b"accept" and not accept:
            accept = value.decode("latin-1")
        elif name == b"if-none-match" and if_none_match is None:
            if_none_match = value.decode("latin-1")
    if state.table.key_kind == "string":
        try:
            key = kb.decode("utf-8")
        except UnicodeDecodeError as e:
            state.counts.lookups[2] += 1
            shown = kb[:100].decode("utf-8", "backslashreplace")
            return problem(
                400,
                "Invalid key",
                f"key {shown!r} is not valid UTF-8 (byte {e.start + 1} of the "
                "percent-decoded key); a key is a UTF-8 string, percent-encoded in the URL",
                key=shown,
            )
    else:
        key = kb.decode("utf-8", "replace")
    return key_response(state, key, scope["method"], accept, if_none_match)


def _shown(state: State, key: str) -> str:
    """The key as problem details quote it: UUID keys as they are (as always);
    string keys quoted and cut, so that spaces, newlines and 1,024-byte keys
    read plainly."""
    if state.table.key_kind == "uuid":
        return key
    return repr(key[:100]) + ("..." if len(key) > 100 else "")


def key_response(state: State, key: str, method: str, accept: str, if_none_match: str | None) -> Response:
    """The answer to GET/HEAD /v1/keys/{key}: the documented behaviour that the
    fast path reproduces for plain hits."""
    counts = state.counts
    if state.shard[1] > 1:
        strings = state.table.key_kind == "string"
        try:
            kb = state.table.validate_key(key)
        except InvalidKey as e:
            counts.lookups[2] += 1
            return problem(400, "Invalid key", str(e), key=key[:100])
        home = (string_shard_of if strings else shard_of)(kb, state.shard[1])
        if home != state.shard[0]:
            return problem(
                421,
                "Misdirected request",
                f"key {_shown(state, key) if strings else kb.decode()} belongs to shard {home} of {state.shard[1]}; "
                f"this server holds shard {state.shard[0]}",
                shard=home,
                headers={"x-accel-redirect": SHARD_REDIRECT.format(index=home)} if strings else None,
            )
    try:
        value = state.table.get(key)
    except InvalidKey as e:
        counts.lookups[2] += 1
        return problem(400, "Invalid key", str(e), key=key[:100])
    except TableCorrupt as e:
        return state.corrupt(e)
    if value is None:
        counts.lookups[1] += 1
        return problem(
            404,
            "Not found",
            f"key {_shown(state, key)} is not in this table (generation {state.table.generation})",
            headers={"x-kv-generation": state.table.generation, "x-kv-worker": state.pid},
        )
    counts.lookups[0] += 1
    headers = {"etag": state.etag, "x-kv-generation": state.table.generation}
    if if_none_match is not None and etag_matches(if_none_match, state.etag):
        return Response(status_code=304, headers=headers)
    if mentions_json(accept) and wants_json(accept):
        try:
            text = value.decode("utf-8")
            body = {"key": key, "value": text}
        except UnicodeDecodeError:
            body = {"key": key, "value_base64": base64.b64encode(value).decode()}
        return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), headers=headers, media_type=JSON)
    return Response(value, headers=headers, media_type=content_type(value))


# -- batches ------------------------------------------------------------------------------


async def batch(state: State, request: Request) -> Response:
    """POST /v1/batch, for direct callers of the FastAPI app: the fast path
    reads the body itself (bounded) and calls `batch_from_body`."""
    return batch_from_body(state, await request.body())


def batch_from_body(state: State, body: bytes) -> Response:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:
        return problem(400, "Bad request", f'body is not valid JSON ({e}); expected {{"keys": ["<uuid>", ...]}}')
    keys = payload.get("keys") if isinstance(payload, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return problem(400, "Bad request", 'expected a JSON object {"keys": ["<uuid>", ...]} with a list of strings')
    if len(keys) > state.max_batch:
        return problem(413, "Batch too large", f"{len(keys)} keys; at most {state.max_batch} per batch, split it", limit=state.max_batch)
    return batch_response(state, keys)


def batch_response(state: State, keys: list[str]) -> Response:
    """One table answers the whole batch: the worker's table never changes.
    Any malformed key makes it a 400 naming them; on a shard server, any key of
    another shard a 421 naming them."""
    counts = state.counts
    get = state.table.get
    validate = state.table.validate_key
    where = string_shard_of if state.table.key_kind == "string" else shard_of
    index, count = state.shard
    values: dict[str, str] = {}
    binary: dict[str, str] = {}
    missing = []
    bad = []
    foreign = []
    try:
        for k in keys:
            try:
                if count > 1:
                    kb = validate(k)
                    s = where(kb, count)
                    if s != index:
                        foreign.append((k, s))
                        continue
                    v = get(kb)
                else:
                    v = get(k)  # hashes canonical keys as given; canonicalises or raises InvalidKey otherwise
            except InvalidKey as e:
                bad.append({"key": k[:100], "reason": str(e)})
                continue
            if v is None:
                missing.append(k)
            else:
                try:
                    values[k] = v.decode("utf-8")
                except UnicodeDecodeError:
                    binary[k] = base64.b64encode(v).decode()
    except TableCorrupt as e:
        return state.corrupt(e)
    if bad:
        counts.lookups[2] += len(bad)
        return problem(400, "Invalid keys", f"{len(bad)} malformed key(s), first: {bad[0]['reason']}", invalid=bad[:20])
    if foreign:
        return problem(
            421,
            "Misdirected request",
            f"{len(foreign)} key(s) belong to other shards; this server holds shard {index} of {count}",
            foreign=[{"key": k, "shard": s} for k, s in foreign[:100]],
        )
    counts.lookups[0] += len(keys) - len(missing)
    counts.lookups[1] += len(missing)
    counts.batches.append(len(keys))
    body = {"generation": state.table.generation, "values": values, "missing": missing}
    if binary:
        body["values_base64"] = binary
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        media_type=JSON,
        headers={"x-kv-generation": state.table.generation, "x-kv-worker": state.pid},
    )


# -- operations ---------------------------------------------------------------------------


def stats(state: State, request: Request) -> Response:
    """GET /v1/stats: the table and the counters summed over all workers.

    Rendered at a bounded rate (kv/http/throttle.py): the counters lag by at
    most RENDER_SECONDS (1 s), plus the metrics.FLUSH_SECONDS (50 ms) other
    workers take to flush theirs."""
    return state.stats_page.get()


def render_stats(state: State) -> Response:
    state.counts.flush()
    t = state.table
    return JSONResponse(
        {
            "keys": len(t),
            "key_kind": t.key_kind,
            "value_bytes": t.value_bytes,
            "table_bytes": t.file_bytes,
            "generation": t.generation,
            "built_at": t.meta.get("built_at"),
            "source": t.meta.get("source"),
            "shard": {"index": state.shard[0], "count": state.shard[1]},
            "worker": int(state.pid),
            # On a root: the base table, and the changes on top of it (docs/WRITES.md).
            "writable": state.writer is not None,
            "base_generation": state.base.generation,
            "pending_changes": state.live.pending if state.live is not None else 0,
            **metrics.totals(),
            "lookups_by_worker": metrics.lookups_by_worker(),
        }
    )


def prometheus(state: State, request: Request) -> Response:
    """GET /metrics: every worker's metrics in the Prometheus text format.

    Rendered at a bounded rate, as /v1/stats is: the figures lag by at most
    RENDER_SECONDS (1 s) plus metrics.FLUSH_SECONDS."""
    return state.metrics_page.get()


def render_metrics(state: State) -> Response:
    state.counts.flush()
    return Response(metrics.exposition(), media_type=PROMETHEUS_TEXT)


def healthz(state: State, request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def readyz(state: State, request: Request) -> Response:
    """Ready while a known record reads back; a corrupt table ends it for good."""
    if state.ready and state.probe_key is not None:
        try:
            if state.base.get(state.probe_key) is None:
                state.ready, state.not_ready_reason = False, "a stored key no longer reads back"
        except (TableCorrupt, ValueError) as e:
            state.ready, state.not_ready_reason = False, str(e)
    if not state.ready:
        return problem(503, "Not ready", state.not_ready_reason)
    if state.live is not None and state.live.error:  # behind the root's head: it would serve stale data
        return problem(503, "Not ready", state.live.error)
    return JSONResponse({"status": "ready", "generation": state.table.generation, "keys": len(state.table)})


# -- documentation (served offline: the assets are in the fastapi_offline package) ------------


def openapi(state: State, request: Request) -> Response:
    return JSONResponse(request.app.openapi())


def swagger(state: State, request: Request) -> Response:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title="kv API",
        swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_PATH}/favicon.png",
    )


def redoc(state: State, request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=OPENAPI_PATH,
        title="kv API",
        redoc_js_url=f"{STATIC_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{STATIC_PATH}/favicon.png",
        with_google_fonts=False,
    )
