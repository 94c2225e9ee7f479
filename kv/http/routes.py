"""The one table of routes: path, methods, handler and documentation of every
route the API serves. Everything else reads it:

- kv/http/app.py registers each route with FastAPI (GET routes answer HEAD
  too, as RFC 9110 asks of GET);
- the fast path (kv/http/fastpath.py) answers hits on KEY itself, routes
  every other request whose RAW path starts with KEY_PREFIX to KEY's handler
  (FastAPI routes on the decoded path, where "%2F" in a key would split it),
  reads BATCH's bodies itself, and labels the requests it counts with `label`;
- the metrics label the fast path's hits with KEY.path (State gives it to
  metrics.Counts);
- a 405 lists the route's methods (`allow`).

Besides these, the app mounts the documentation's static files under
handlers.STATIC_PATH (counted under the label "other").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path

from . import handlers, openapi, writes


@dataclass(frozen=True)
class Route:
    path: str  # a Starlette path template; also the route's metrics label
    methods: tuple[str, ...]
    handler: Callable[..., Any]  # handler(state, request) -> Response, sync or async
    doc: openapi.Doc

    @property
    def served(self) -> tuple[str, ...]:
        """The methods answered: HEAD wherever GET."""
        return self.methods + ("HEAD",) if "GET" in self.methods and "HEAD" not in self.methods else self.methods


ROUTES: tuple[Route, ...] = (
    Route(handlers.KEY_PATH, ("GET", "HEAD"), handlers.get_key, openapi.key_doc),
    Route("/v1/batch", ("POST",), handlers.batch, openapi.batch_doc),
    Route("/v1/stats", ("GET",), handlers.stats, openapi.STATS_DOC),
    Route("/healthz", ("GET",), handlers.healthz, openapi.HEALTHZ_DOC),
    Route("/readyz", ("GET",), handlers.readyz, openapi.READYZ_DOC),
    Route("/metrics", ("GET",), handlers.prometheus, openapi.METRICS_DOC),
    Route("/docs", ("GET",), handlers.swagger, openapi.HIDDEN),
    Route("/redoc", ("GET",), handlers.redoc, openapi.HIDDEN),
    Route(handlers.OPENAPI_PATH, ("GET",), handlers.openapi, openapi.HIDDEN),
    Route(writes.WRITE_PATH, ("POST",), writes.write_route, openapi.write_doc),
    Route(handlers.KEY_PATH, ("PUT", "DELETE"), writes.key_write_route, openapi.key_write_doc),
)

KEY, BATCH, WRITE_ROUTE = ROUTES[0], ROUTES[1], ROUTES[-2]
KEY_PREFIX = handlers.KEY_PREFIX  # b"/v1/keys/": every request whose raw path starts so is a key lookup
LABELS = frozenset(r.path for r in ROUTES if "{" not in r.path)
_ALLOW = [(compile_path(r.path)[0], ", ".join(r.served)) for r in ROUTES]


def label(raw_path: bytes, path: str) -> str:
    """The metrics label of a request: its route's path template, or "other"."""
    if raw_path.startswith(KEY_PREFIX):
        return KEY.path
    return path if path in LABELS else "other"


def allow(path: str) -> str | None:
    """The Allow header of a 405 on `path`: the methods its route serves."""
    for regex, methods in _ALLOW:
        if regex.match(path):
            return methods
    return None
