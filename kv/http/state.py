"""What one worker serves, grouped by lifetime as uvicorn groups its state:
everything here lives as long as the worker. Its table is a Table, which
never changes, or on a root a LiveTable (kv/live.py), whose generation moves
with writes, publishes and compactions: `on_change` then renews what is
derived from it (ETag, hit headers, the /readyz probe, the table gauges)."""

from __future__ import annotations

import logging
import os

from starlette.responses import Response

from .. import metrics
from ..errors import TableCorrupt
from ..live import LiveTable
from ..table import Table
from ..writes import Committed, Writer
from . import handlers
from .auth import Guard
from .problems import problem
from .routes import KEY
from .throttle import Throttled
from .writes import WriteAuth

log = logging.getLogger("kv")


class State:
    """A worker's table, counters, limits, readiness and rendered pages."""

    def __init__(self, table: Table | LiveTable, max_batch: int, guard: Guard | None = None):
        # The table and what is derived from it (again, when a LiveTable moves).
        self.table = table
        self.live = table if isinstance(table, LiveTable) else None
        self.shard = (table.header.shard_index, table.header.shard_count)
        # Response headers every hit carries, in the order Starlette emits them
        # for Response(headers=...): custom headers, then content-length and
        # content-type (appended per response). The fast path holds this
        # list: it is changed in place.
        self.hit_headers: list = [(b"etag", b""), (b"x-kv-generation", b"")]
        self.generation = ""
        self.base: Table = table.table if isinstance(table, LiveTable) else table  # whose record /readyz reads back
        self.probe_key: bytes | None = None
        self.on_change()
        if self.live is not None:
            self.live.listeners.append(self.on_change)

        # Writes (kv/http/writes.py): a Writer and the token check, when writable.
        self.writer: Writer | None = None
        self.write_auth: WriteAuth | None = None

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

    def on_change(self) -> None:
        """Renew what derives from the generation served (cheap when it did not change)."""
        t = self.table
        generation = t.generation
        if generation == self.generation:
            return
        self.generation = generation
        self.etag = f'"{generation}"'
        self.hit_headers[0] = (b"etag", self.etag.encode())
        self.hit_headers[1] = (b"x-kv-generation", generation.encode())
        base = t.table if isinstance(t, LiveTable) else t
        previous = self.base.generation if self.base is not base else None
        if base is not self.base or self.probe_key is None:
            self.base = base
            # A record known to be there, read back by /readyz (from the base: writes may delete it).
            self.probe_key = next((k for k, _ in base.items()), None) if len(base) else None
        metrics.set_table_gauges(t, base.generation, previous)

    def counts_writes(self, committed: Committed) -> None:
        self.counts.writes[0] += committed.sets
        self.counts.writes[1] += committed.deletes

    def corrupt(self, e: TableCorrupt) -> Response:
        """Stop answering from a table found corrupt; the 503 that says so."""
        self.ready = False
        self.not_ready_reason = str(e)
        log.error("table corrupt, refusing to serve it: %s", e)
        return problem(503, "Table corrupt", f"{e}; this worker no longer answers from it")
