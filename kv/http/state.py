"""What one worker serves, grouped by lifetime as uvicorn groups its state:
everything here lives as long as the worker (its table never changes; a new
table means new workers)."""

from __future__ import annotations

import logging
import os

from starlette.responses import Response

from .. import metrics
from ..errors import TableCorrupt
from ..table import Table
from . import handlers
from .auth import Guard
from .problems import problem
from .routes import KEY
from .throttle import Throttled

log = logging.getLogger("kv")


class State:
    """A worker's table, counters, limits, readiness and rendered pages."""

    def __init__(self, table: Table, max_batch: int, guard: Guard | None = None):
        # The table and what is derived from it once.
        self.table = table
        self.etag = f'"{table.generation}"'
        self.shard = (table.header.shard_index, table.header.shard_count)
        # A record known to be there, read back by /readyz.
        self.probe_key = next((k for k, _ in table.items()), None) if len(table) else None
        # Response headers every hit carries, in the order Starlette emits them
        # for Response(headers=...): custom headers, then content-length and
        # content-type (appended per response).
        self.hit_headers = [
            (b"etag", self.etag.encode()),
            (b"x-kv-generation", table.generation.encode()),
        ]

        # Limits, and who may read (read tokens, /metrics on its own bind).
        self.max_batch = max_batch
        self.guard = guard or Guard(None)

        # Counters (the fast path's hits are labelled with the route it serves)
        # and the pages that sum them, rendered at a bounded rate.
        self.counts = metrics.Counts(KEY.path)
        self.pid = str(os.getpid())
        self.stats_page = Throttled(lambda: handlers.render_stats(self))
        self.metrics_page = Throttled(lambda: handlers.render_metrics(self))

        # Readiness: false for good once the table reads back wrong.
        self.ready = True
        self.not_ready_reason = ""

    def corrupt(self, e: TableCorrupt) -> Response:
        """Stop answering from a table found corrupt; the 503 that says so."""
        self.ready = False
        self.not_ready_reason = str(e)
        log.error("table corrupt, refusing to serve it: %s", e)
        return problem(503, "Table corrupt", f"{e}; this worker no longer answers from it")
