"""A response that is costly to render, rendered at a bounded rate.

/metrics and /v1/stats sum every worker's counter files: a millisecond or more
each time, which clients polling them in a loop would take from lookups (16
connections flooding them cut lookups 28-38 times). `Throttled` renders such a
response at most RENDER_BURST times in a row, then at most once every
RENDER_SECONDS (a token bucket per worker), and otherwise serves its last
rendering again. So a few successive calls, such as a client reading counters
before and after a request, each get fresh figures, a flood costs a worker one
rendering per RENDER_SECONDS, and a served rendering is never older than
RENDER_SECONDS.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.responses import Response

RENDER_SECONDS = 1.0
RENDER_BURST = 10


class Throttled:
    """`get()` returns `render()`'s response, rendering anew only while the
    budget allows; one per worker and response (State holds them)."""

    __slots__ = ("render", "response", "tokens", "at", "clock")

    def __init__(self, render: Callable[[], Response], clock: Callable[[], float] = time.monotonic):
        self.render = render
        self.response: Response | None = None
        self.tokens = float(RENDER_BURST)
        self.clock = clock
        self.at = clock()

    def get(self) -> Response:
        now = self.clock()
        tokens = min(RENDER_BURST, self.tokens + (now - self.at) / RENDER_SECONDS)
        self.at = now
        # With fewer than one token left, the last rendering is younger than
        # RENDER_SECONDS: a token comes back per RENDER_SECONDS.
        if tokens >= 1 or self.response is None:
            self.response = self.render()
            tokens = max(tokens - 1, 0.0)
        self.tokens = tokens
        return self.response
