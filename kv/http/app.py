"""The ASGI app of one worker: the FastAPI app built from the route table
(kv/http/routes.py), behind the fast path (kv/http/fastpath.py).

Create it with `create_app(table_path)`; `kv serve` sets KV_TABLE for the
gunicorn workers, each of which maps the table itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Protocol, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from .. import metrics, settings
from ..table import open_table
from . import openapi
from .auth import Guard
from .fastpath import FastPath
from .handlers import STATIC_PATH
from .problems import problem
from .routes import ROUTES, Route, allow
from .state import State

log = logging.getLogger("kv")


class KVApp(Protocol):
    """What create_app returns: FastPath's ASGI function, carrying the
    worker's State, the FastAPI app behind it and the FastPath."""

    state: State
    api: FastAPI
    fast_path: FastPath

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def create_app(
    table_path: str | os.PathLike | None = None,
    *,
    max_batch: int | None = None,
    root: str | os.PathLike | None = None,
    writable: bool | None = None,
) -> KVApp:
    """The ASGI app for one worker: maps the table (KV_TABLE by default), or
    follows a root's head page (`root`, KV_ROOT: kv/live.py), taking writes
    when `writable` (KV_WRITABLE). It is FastPath's closure, carrying
    `.state`, `.api` and `.fast_path`."""
    env = os.environ
    root = root or (None if table_path else env.get("KV_ROOT"))
    max_batch = max_batch or settings.MAX_BATCH.value()  # KV_MAX_BATCH, which kv serve sets; else the default
    if root:
        state = live_state(root, max_batch, bool(env.get("KV_WRITABLE")) if writable is None else writable)
    else:
        path = table_path or env.get("KV_TABLE")
        if not path:
            raise RuntimeError("no table: pass create_app(path) or set KV_TABLE")
        state = State(open_table(path, fd=_inherited_fd(path)), max_batch, Guard.from_env())
    api = build_api(state)
    fast_path = FastPath(api, state, max_body=max(64 * 1024, max_batch * 128))
    app = cast(KVApp, fast_path.asgi)  # a function: it takes the three attributes below
    app.state = state
    app.api = api
    app.fast_path = fast_path
    return app


def live_state(root: str | os.PathLike, max_batch: int, writable: bool) -> State:
    """A worker's State on a root: a LiveTable, and a Writer when writable."""
    from ..live import LiveTable
    from ..writes import Writer
    from .writes import WriteAuth, read_write_token

    live = LiveTable(root)
    state = State(live, max_batch, Guard.from_env())
    if writable:
        token = read_write_token(settings.WRITE_TOKEN_FILE.value())
        if token is None:
            raise RuntimeError(f"writable, but no write token: set {settings.WRITE_TOKEN_ENV} or KV_WRITE_TOKEN_FILE")
        state.writer = Writer(
            live, compact_changes=settings.COMPACT_CHANGES.value(), compact_bytes=settings.COMPACT_BYTES.value(), max_keys=max_batch
        )
        state.write_auth = WriteAuth(token)
    return state


def _inherited_fd(path: str | os.PathLike) -> int | None:
    """The descriptor of the table the master opened (kv serve sets
    KV_TABLE_FD with KV_TABLE), so that a worker replacing a crashed one maps
    the table its siblings serve even when the file has since been deleted or
    made unreadable. Only when KV_TABLE is the path asked for."""
    fd = os.environ.get("KV_TABLE_FD")
    if fd and fd.isdigit() and os.environ.get("KV_TABLE") == str(path):
        return int(fd)
    return None


def build_api(state: State) -> FastAPI:
    """The documented API: every route of the table, the documentation's
    static files, problem responses for every error."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.on_change()
        task = asyncio.get_running_loop().create_task(_flush_forever(state.counts))
        try:
            yield
        finally:
            task.cancel()
            state.counts.flush()

    # The schema is served by a route of the table (openapi_url=None); no
    # trailing-slash redirects: their Location would name the client's Host.
    api = FastAPI(
        title=openapi.TITLE,
        version=openapi.VERSION,
        description=openapi.DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        lifespan=lifespan,
        # Given here rather than by add_exception_handler, whose (Starlette's)
        # type takes only handlers of any Exception.
        exception_handlers={StarletteHTTPException: http_error, RequestValidationError: invalid_request, Exception: unexpected},
    )
    static = resources.files("fastapi_offline").joinpath("static")
    api.mount(STATIC_PATH, StaticFiles(directory=str(static)), name="static-docs")
    for route in ROUTES:
        for method in route.served:
            doc: dict[str, Any] = dict(route.doc(state, method)) if method in route.methods else {"include_in_schema": False}
            api.add_api_route(
                route.path, endpoint(route, state, doc.pop("params", ())), methods=[method], name=route.handler.__name__, **doc
            )
    return api


def endpoint(route: Route, state: State, params: Iterable[inspect.Parameter] = ()) -> Callable[..., Awaitable[Response]]:
    """FastAPI's endpoint for a route: calls route.handler(state, request).
    Its signature declares the documented path parameters, so that FastAPI
    puts them in the schema; the handler reads them from the request."""
    handler = route.handler
    if inspect.iscoroutinefunction(handler):

        async def call(request: Request, **_params: Any) -> Response:
            return await handler(state, request)
    else:

        async def call(request: Request, **_params: Any) -> Response:
            return handler(state, request)

    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    call.__signature__ = inspect.Signature([request, *params])  # type: ignore[attr-defined]  # read by inspect.signature
    call.__name__ = handler.__name__
    return call


async def _flush_forever(counts: metrics.Counts) -> None:
    while True:
        await asyncio.sleep(metrics.FLUSH_SECONDS)
        try:
            counts.flush()
        except Exception:  # a full disk must not kill the worker
            log.exception("flushing metrics failed")


# -- errors as problem responses ---------------------------------------------------------


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    titles = {404: "Not found", 405: "Method not allowed"}
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = getattr(exc, "headers", None)
    if exc.status_code == 404:
        detail = f"no route {request.url.path[:200]!r}; see /docs for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path[:200]}"
        methods = allow(request.url.path)
        if methods:  # every method the route serves (Starlette names only the first partial match's)
            headers = {**(headers or {}), "Allow": methods}
    return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail, headers=headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return problem(400, "Bad request", f"{first.get('msg', 'invalid request')} at {where}" if where else "invalid request")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # never expected; still an answer, not a dropped connection
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error", f"{type(exc).__name__}; see the server log")
