"""Token cost in process: the fast path's ASGI closure on plain GET hits, the
same requests (Host, User-Agent, Authorization) to an app without tokens and to
one with, 31 paired alternating rounds of 5,000 hits; median of paired ratios."""

import asyncio
import random
import statistics
import time

from kv.http.app import create_app
from kv.http.auth import Guard

table = "b.kvt"
keys = [line[:36] for line in open("b.data", "rb")][:20000]
plain = create_app(table)
tok = create_app(table)
tok.state.guard = Guard([b"bench-token-0123456789abcdef"])
tok_call = tok.fast_path._make_call()


async def send(m):
    pass


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


sc = [
    {
        "type": "http",
        "method": "GET",
        "raw_path": b"/v1/keys/" + k,
        "path": "/v1/keys/" + k.decode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"authorization", b"Bearer bench-token-0123456789abcdef")],
        "http_version": "1.1",
    }
    for k in random.Random(1).sample(keys, 5000)
]


async def run(call):
    t0 = time.perf_counter()
    for s in sc:
        await call(s, receive, send)
    return (time.perf_counter() - t0) / len(sc) * 1e6


async def main():
    ratios, off, on = [], [], []
    for i in range(31):
        if i % 2:
            b = await run(tok_call)
            a = await run(plain.fast_path.asgi)
        else:
            a = await run(plain.fast_path.asgi)
            b = await run(tok_call)
        off.append(a)
        on.append(b)
        ratios.append(a / b)
    assert tok.state.counts.lookups[0] == 31 * 5000
    print(
        f"in process: tokens off {statistics.median(off):.2f} us/hit, on {statistics.median(on):.2f} us/hit; "
        f"rate ratio on/off: of the medians {statistics.median(off) / statistics.median(on):.3f}, "
        f"of the bests {min(off) / min(on):.3f}, median of the pairs {statistics.median(ratios):.3f}"
    )


asyncio.run(main())
