"""The HTTP API: a FastAPI app (the documented contract) behind a lean ASGI
fast path for the one request that matters most, a hit on GET /v1/keys/{key}.

FastAPI's routing, validation and response classes cost more than the table
lookup itself, so `FastPath` answers plain hits directly: one prefix check, a
scan of a handful of headers, `Table.get` on the raw path bytes, one
precomputed header list, two `send` calls. Everything else (misses, malformed
keys, JSON, HEAD, If-None-Match, every other route) goes to FastAPI, which
produces the same bytes for a hit (tests/test_fastpath.py proves it).

Create the app with `create_app(table_path)`; `kv serve` sets KV_TABLE for the
gunicorn workers, each of which maps the table itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from bisect import bisect_left
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from . import metrics
from .errors import InvalidKey, TableCorrupt
from .keys import canonical_key, shard_of
from .table import Table, open_table

log = logging.getLogger("kv")

KEY_ROUTE = "/v1/keys/{key}"
KEY_PREFIX = b"/v1/keys/"
MAX_PATH = 2048  # bytes; a key URL is under 50
MAX_HEADERS = 16384  # bytes of all header names and values
MAX_HEADER_FIELDS = 100  # header lines (gunicorn's and nginx-era default)
# The fast path checks only count and value length, which bound the total the same way.
FAST_MAX_HEADERS = 16
FAST_MAX_FIELD = MAX_HEADERS // FAST_MAX_HEADERS  # name + value: 16 of them stay within MAX_HEADERS
DEFAULT_MAX_BATCH = 1000
BODY_SECONDS = 10.0  # the whole request body must arrive within this (a 1000-key batch is 40 KB)
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
PROBLEM = "application/problem+json"
KEY_PATTERN = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$"


def content_type(value: bytes) -> str:
    if value.isascii():
        return TEXT
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return BINARY
    return TEXT


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110, 13.1.2): W/"x" matches "x"."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


RAW_TYPES = {"text/plain", "application/octet-stream", "text/*", "*/*"}


def wants_json(accept: str) -> bool:
    """True when Accept ranks application/json above the raw value's types:
    listed with q > 0 and no raw-compatible range (text/plain, */*, ...) with
    a higher q. `application/json, */*;q=0.5` is JSON; `*/*;q=0.8, application/json;q=0.1`
    and `application/json;q=0` are not."""
    json_q, raw_q = 0.0, 0.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "application/json":
            json_q = max(json_q, q)
        elif media in RAW_TYPES:
            raw_q = max(raw_q, q)
    return json_q > 0 and json_q >= raw_q


def problem(status: int, title: str, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class State:
    """What a worker serves: its table, its counters, its limits."""

    def __init__(self, table: Table, max_batch: int):
        self.table = table
        self.max_batch = max_batch
        self.counts = metrics.Counts()
        self.pid = str(os.getpid())
        self.etag = f'"{table.generation}"'
        self.shard = (table.header.shard_index, table.header.shard_count)
        self.ready = True
        self.not_ready_reason = ""
        # A record known to be there, read back by /readyz.
        self.probe_key = next((k for k, _ in table.items()), None) if len(table) else None
        # Response headers every hit carries, in the order Starlette emits them
        # for Response(headers=...): custom headers, then content-length and
        # content-type (appended per response).
        self.hit_headers = [
            (b"etag", self.etag.encode()),
            (b"x-kv-generation", table.generation.encode()),
        ]

    def corrupt(self, e: TableCorrupt) -> JSONResponse:
        self.ready = False
        self.not_ready_reason = str(e)
        log.error("table corrupt, refusing to serve it: %s", e)
        return problem(503, "Table corrupt", f"{e}; this worker no longer answers from it")


def key_response(state: State, key: str, method: str, accept: str, if_none_match: str | None) -> Response:
    """The answer to GET/HEAD /v1/keys/{key}: the documented behaviour that the
    fast path reproduces for plain hits."""
    counts = state.counts
    if state.shard[1] > 1:
        try:
            kb = canonical_key(key)
        except InvalidKey as e:
            counts.lookups[2] += 1
            return problem(400, "Invalid key", str(e), key=key[:100])
        home = shard_of(kb, state.shard[1])
        if home != state.shard[0]:
            return problem(421, "Misdirected request",
                           f"key {kb.decode()} belongs to shard {home} of {state.shard[1]}; this server holds shard {state.shard[0]}",
                           shard=home)
    try:
        value = state.table.get(key)
    except InvalidKey as e:
        counts.lookups[2] += 1
        return problem(400, "Invalid key", str(e), key=key[:100])
    except TableCorrupt as e:
        return state.corrupt(e)
    if value is None:
        counts.lookups[1] += 1
        return problem(404, "Not found", f"key {key} is not in this table (generation {state.table.generation})",
                       headers={"x-kv-generation": state.table.generation, "x-kv-worker": state.pid})
    counts.lookups[0] += 1
    headers = {"etag": state.etag, "x-kv-generation": state.table.generation}
    if if_none_match is not None and etag_matches(if_none_match, state.etag):
        return Response(status_code=304, headers=headers)
    if "json" in accept and wants_json(accept):
        try:
            text = value.decode("utf-8")
            body = {"key": key, "value": text}
        except UnicodeDecodeError:
            body = {"key": key, "value_base64": base64.b64encode(value).decode()}
        return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), headers=headers,
                        media_type="application/json")
    return Response(value, headers=headers, media_type=content_type(value))


# -- the FastAPI app --------------------------------------------------------------------

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


def _problem_doc(description: str) -> dict:
    return {"description": description, "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}


def build_api(state: State) -> FastAPI:
    static = resources.files("fastapi_offline").joinpath("static")

    @asynccontextmanager
    async def lifespan(app):
        metrics.set_table_gauges(state.table)
        task = asyncio.get_running_loop().create_task(_flush_forever(state.counts))
        try:
            yield
        finally:
            task.cancel()
            state.counts.flush()

    api = FastAPI(
        title="kv",
        version=__version__,
        description="A read-only key-value server: GET a UUID key, get its value back. "
        "Values are the bytes of the data file; errors are RFC 9457 problem details.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    api.mount("/static-docs", StaticFiles(directory=str(static)), name="static-docs")

    @api.get("/docs", include_in_schema=False)
    async def swagger():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="kv API", swagger_js_url="/static-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-docs/swagger-ui.css", swagger_favicon_url="/static-docs/favicon.png")

    @api.get("/redoc", include_in_schema=False)
    async def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="kv API", redoc_js_url="/static-docs/redoc.standalone.js",
                              redoc_favicon_url="/static-docs/favicon.png", with_google_fonts=False)

    key_responses = {
        200: {
            "description": "The value: raw bytes (text/plain when UTF-8, else application/octet-stream), or JSON with Accept: application/json",
            "content": {
                TEXT: {"schema": {"type": "string"}},
                BINARY: {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object", "properties": {"key": {"type": "string"}, "value": {"type": "string"},
                                                                                  "value_base64": {"type": "string"}}}},
            },
            "headers": {"ETag": {"schema": {"type": "string"}}, "X-KV-Generation": {"schema": {"type": "string"}}},
        },
        304: {"description": "Not modified: If-None-Match holds this generation's ETag"},
        400: _problem_doc("Malformed key"),
        404: _problem_doc("Key not in the table"),
        421: _problem_doc("Key belongs to another shard"),
        503: _problem_doc("Table corrupt"),
    }

    key_doc = "`key` is a UUID, 8-4-4-4-12 or 32 hex digits, any case."
    # The pattern is documented, not enforced by FastAPI: the table's own check
    # gives the clearer 400 detail.
    example_key = state.probe_key.decode() if state.probe_key else "3479d894-3271-4935-88cf-a06f3cbb80a5"
    KeyParam = FastAPIPath(description="UUID key", json_schema_extra={"pattern": KEY_PATTERN}, examples=[example_key])

    @api.get("/v1/keys/{key}", responses=key_responses, response_class=Response, summary="Look up one key",
             description=key_doc, operation_id="get_key")
    async def get_key(request: Request, key: str = KeyParam):
        h = request.headers
        return key_response(state, key, request.method, h.get("accept", ""), h.get("if-none-match"))

    @api.head("/v1/keys/{key}", responses=key_responses, response_class=Response, summary="Check one key (no body)",
              description=key_doc, operation_id="head_key")
    async def head_key(request: Request, key: str = KeyParam):
        h = request.headers
        return key_response(state, key, request.method, h.get("accept", ""), h.get("if-none-match"))

    batch_example = {"keys": [example_key, "f8a24bb8-eff8-41dc-929b-10b4c3e49e05"]}
    batch_responses = {
        200: {"description": "Values found (as UTF-8 text, or base64 in values_base64 when not UTF-8) and keys missing",
              "content": {"application/json": {"schema": {"type": "object", "properties": {
                  "generation": {"type": "string"}, "values": {"type": "object", "additionalProperties": {"type": "string"}},
                  "values_base64": {"type": "object", "additionalProperties": {"type": "string"}},
                  "missing": {"type": "array", "items": {"type": "string"}}}}}}},
        400: _problem_doc("Malformed body or keys"),
        413: _problem_doc("More keys than the batch limit"),
        421: _problem_doc("Keys of other shards"),
        503: _problem_doc("Table corrupt"),
    }

    batch_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {
                "type": "object", "required": ["keys"],
                "properties": {"keys": {"type": "array", "items": {"type": "string", "pattern": KEY_PATTERN}, "maxItems": state.max_batch}},
            }, "example": batch_example}},
        }
    }

    @api.post("/v1/batch", responses=batch_responses, summary="Look up many keys", openapi_extra=batch_body,
              description=f"Up to {state.max_batch} keys; all values come from one table generation.")
    async def batch(request: Request):
        # FastPath answers POST /v1/batch itself (batch_from_body); this route
        # documents it in the OpenAPI schema and serves direct callers of `api`.
        return batch_from_body(state, await request.body())

    @api.get("/v1/stats", summary="Statistics, summed over all workers")
    async def stats():
        state.counts.flush()
        t = state.table
        return {
            "keys": len(t),
            "value_bytes": t.value_bytes,
            "table_bytes": t.file_bytes,
            "generation": t.generation,
            "built_at": t.meta.get("built_at"),
            "source": t.meta.get("source"),
            "shard": {"index": state.shard[0], "count": state.shard[1]},
            "worker": int(state.pid),
            **metrics.totals(),
            "lookups_by_worker": metrics.lookups_by_worker(),
        }

    @api.get("/healthz", summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @api.get("/readyz", summary="The table is open and reads back", responses={503: _problem_doc("Not ready")})
    async def readyz():
        if state.ready and state.probe_key is not None:
            try:
                if state.table.get(state.probe_key) is None:
                    state.ready, state.not_ready_reason = False, "a stored key no longer reads back"
            except (TableCorrupt, ValueError) as e:
                state.ready, state.not_ready_reason = False, str(e)
        if not state.ready:
            return problem(503, "Not ready", state.not_ready_reason)
        return {"status": "ready", "generation": state.table.generation, "keys": len(state.table)}

    @api.get("/metrics", summary="Prometheus metrics, all workers", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus():
        state.counts.flush()
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        titles = {404: "Not found", 405: "Method not allowed"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.url.path[:200]!r}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path[:200]}"
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail, headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem(400, "Bad request", f"{first.get('msg', 'invalid request')} at {where}" if where else "invalid request")

    @api.exception_handler(Exception)
    async def unexpected(request, exc):  # never expected; still an answer, not a dropped connection
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error", f"{type(exc).__name__}; see the server log")

    return api


def batch_from_body(state: State, body: bytes) -> Response:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:
        return problem(400, "Bad request", f"body is not valid JSON ({e}); expected {{\"keys\": [\"<uuid>\", ...]}}")
    keys = payload.get("keys") if isinstance(payload, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return problem(400, "Bad request", 'expected a JSON object {"keys": ["<uuid>", ...]} with a list of strings')
    if len(keys) > state.max_batch:
        return problem(413, "Batch too large", f"{len(keys)} keys; at most {state.max_batch} per batch, split it",
                       limit=state.max_batch)
    return batch_response(state, keys)


def batch_response(state: State, keys: list[str]) -> Response:
    """One table answers the whole batch: the worker's table never changes.
    Any malformed key makes it a 400 naming them; on a shard server, any key of
    another shard a 421 naming them."""
    counts = state.counts
    get = state.table.get
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
                    kb = canonical_key(k)
                    s = shard_of(kb, count)
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
        return problem(421, "Misdirected request",
                       f"{len(foreign)} key(s) belong to other shards; this server holds shard {index} of {count}",
                       foreign=[{"key": k, "shard": s} for k, s in foreign[:100]])
    counts.lookups[0] += len(keys) - len(missing)
    counts.lookups[1] += len(missing)
    counts.batches.append(len(keys))
    body = {"generation": state.table.generation, "values": values, "missing": missing}
    if binary:
        body["values_base64"] = binary
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), media_type="application/json",
                    headers={"x-kv-generation": state.table.generation, "x-kv-worker": state.pid})


async def _flush_forever(counts: metrics.Counts):
    while True:
        await asyncio.sleep(metrics.FLUSH_SECONDS)
        try:
            counts.flush()
        except Exception:  # a full disk must not kill the worker
            log.exception("flushing metrics failed")


# -- the fast path ---------------------------------------------------------------------------


class FastPath:
    """Pure ASGI front: answers plain GET hits itself, passes all else to `api`.

    Also enforces the limits no layer below sets for uvicorn: path and header
    sizes (414, 431) and request body size (413), so oversized input gets a
    clear 4xx instead of memory growth.
    """

    def __init__(self, api: FastAPI, state: State, max_body: int, body_seconds: float = BODY_SECONDS):
        self.api = api
        self.state = state
        self.max_body = max_body
        self.body_seconds = body_seconds

        # The closure itself is the ASGI app create_app hands to uvicorn: calling
        # an instance would add a coroutine layer per request (0.3 us).
        self.asgi = self._make_call()

    def _make_call(self):
        """The hot path, as a closure over locals (no attribute lookups)."""
        api = self.api
        slow = self._slow
        state = self.state
        get = state.table.get
        if state.shard[1] > 1:  # a shard answers its own keys here, others in FastAPI (421)
            own, shift, table_get = state.shard[0], 8 - (state.shard[1].bit_length() - 1), get

            def get(kb):
                try:
                    return table_get(kb) if int(kb[:2], 16) >> shift == own else None
                except ValueError:
                    return None
        lookups = state.counts.lookups
        fast = state.counts.fast
        etag, generation = state.hit_headers
        as_text = (b"content-type", b"text/plain; charset=utf-8")
        clock = time.perf_counter
        buckets = metrics.LATENCY_BUCKETS
        first = buckets[0]
        where = bisect_left

        async def call(scope, receive, send):
            if scope["type"] != "http":
                return await api(scope, receive, send)
            t0 = clock()
            raw = scope["raw_path"]
            if raw[:9] == b"/v1/keys/" and scope["method"] == "GET" and not scope["query_string"]:
                headers = scope["headers"]
                for name, value in headers:
                    # Conditional, JSON and oversized requests take the full
                    # path, which checks every limit (431, 414) and says why.
                    if name == b"if-none-match" or (name == b"accept" and b"json" in value) or len(name) + len(value) > FAST_MAX_FIELD:
                        break
                else:
                    if len(headers) > FAST_MAX_HEADERS:
                        return await slow(scope, receive, send, t0)
                    try:
                        value = get(raw[9:])
                    except (InvalidKey, TableCorrupt):
                        value = None  # FastAPI says why
                    if value is not None:
                        await send({"type": "http.response.start", "status": 200, "headers": [
                            etag, generation, (b"content-length", b"%d" % len(value)),
                            as_text if value.isascii() else (b"content-type", content_type(value).encode()),
                        ]})
                        await send({"type": "http.response.body", "body": value})
                        lookups[0] += 1
                        took = clock() - t0
                        fast[0 if took <= first else where(buckets, took)] += 1  # nearly always the first bucket
                        return
            await slow(scope, receive, send, t0)

        return call

    async def __call__(self, scope, receive, send):  # for direct use; create_app returns self.asgi
        await self.asgi(scope, receive, send)

    async def _slow(self, scope, receive, send, t0):
        raw = scope["raw_path"]
        route = KEY_ROUTE if raw[:9] == KEY_PREFIX else (scope["path"] if scope["path"] in _ROUTES else "other")
        status = [500]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if len(raw) + len(scope.get("query_string", b"")) > MAX_PATH:
                resp = problem(414, "URI too long", f"request target is {len(raw)} bytes; the limit is {MAX_PATH}")
                return await resp(scope, receive, send_counted)
            if sum(len(n) + len(v) for n, v in scope["headers"]) > MAX_HEADERS:
                resp = problem(431, "Request header fields too large", f"headers exceed {MAX_HEADERS} bytes")
                return await resp(scope, receive, send_counted)
            if len(scope["headers"]) > MAX_HEADER_FIELDS:
                resp = problem(431, "Request header fields too large",
                               f"{len(scope['headers'])} header fields; the limit is {MAX_HEADER_FIELDS}")
                return await resp(scope, receive, send_counted)
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                    resp = problem(413, "Request body too large", f"Content-Length {value[:20].decode('latin-1')!r}; the limit is {self.max_body} bytes")
                    return await resp(scope, receive, send_counted)
            if scope["method"] in ("POST", "PUT", "PATCH"):
                # Read the body here, bounded, whatever the framing (chunked
                # bodies have no Content-Length), then hand it on.
                body = bytearray()
                try:
                    async with asyncio.timeout(self.body_seconds):  # a trickled body must not hold a slot forever
                        while True:
                            message = await receive()
                            if message["type"] == "http.disconnect":
                                return
                            body += message.get("body", b"")
                            if len(body) > self.max_body:
                                resp = problem(413, "Request body too large", f"the body exceeds {self.max_body} bytes")
                                return await resp(scope, receive, send_counted)
                            if not message.get("more_body", False):
                                break
                except TimeoutError:
                    resp = problem(408, "Request timeout", f"the request body took longer than {self.body_seconds:g} s to arrive",
                                   headers={"connection": "close"})
                    return await resp(scope, receive, send_counted)
                if route == "/v1/batch" and scope["method"] == "POST":
                    # Straight to the handler: FastAPI's routing and request
                    # objects cost more than looking up 100 keys.
                    try:
                        resp = batch_from_body(self.state, bytes(body))
                    except Exception:  # noqa: BLE001 - still an answer, as the api's handler gives
                        log.exception("unexpected error on POST /v1/batch")
                        resp = problem(500, "Internal error", "see the server log")
                    return await resp(scope, receive, send_counted)
                receive = _replay(bytes(body), receive)
            await self.api(scope, receive, send_counted)
        finally:
            self.state.counts.request(route, status[0], time.perf_counter() - t0)


_ROUTES = {"/v1/batch", "/v1/stats", "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"}


def _replay(body: bytes, receive):
    sent = [False]

    async def replayed():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def create_app(table_path: str | os.PathLike | None = None, *, max_batch: int | None = None) :
    """The ASGI app for one worker: maps the table (KV_TABLE by default).
    It is FastPath's closure, carrying `.state`, `.api` and `.fast_path`."""
    path = table_path or os.environ.get("KV_TABLE")
    if not path:
        raise RuntimeError("no table: pass create_app(path) or set KV_TABLE")
    table = open_table(path)
    max_batch = max_batch or int(os.environ.get("KV_MAX_BATCH", DEFAULT_MAX_BATCH))
    state = State(table, max_batch)
    api = build_api(state)
    fast_path = FastPath(api, state, max_body=max(64 * 1024, max_batch * 128))
    app = fast_path.asgi
    app.state = state
    app.api = api
    app.fast_path = fast_path
    return app
