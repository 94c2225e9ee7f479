"""Sharded builds: one streaming pass over a data file writes N tables.

Shard i of N (N a power of two up to 256) holds the keys whose first
log2(N) bits, the leading bits of the UUID's first byte, equal i. UUID v4 keys
are uniformly random there, so shards come out even; a router (nginx) can pick
the shard from the key's first two hex digits without hashing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from . import format as fmt
from .build import BuildReport, _build_time, _LineReader, _progress_bar, _TableWriter, default_table_path
from .keys import shard_of

MAX_SHARDS = 256

_NIBBLE = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i


def check_shard_count(n: int) -> int:
    if not (1 <= n <= MAX_SHARDS and n & (n - 1) == 0):
        raise ValueError(f"shard count must be a power of two from 1 to {MAX_SHARDS}, not {n}")
    return n


def shard_paths(out: str | os.PathLike, shards: int) -> list[Path]:
    """TABLE.kvt -> TABLE.shard-00-of-04.kvt, ..."""
    out = Path(out)
    width = len(str(shards - 1))
    return [out.with_name(f"{out.stem}.shard-{i:0{width}d}-of-{shards}{out.suffix or '.kvt'}") for i in range(shards)]


def key_range(index: int, shards: int) -> tuple[str, str]:
    """The first and last 2-hex-digit prefixes of shard `index`."""
    span = 256 // shards
    return f"{index * span:02x}", f"{index * span + span - 1:02x}"


def build_shards(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    shards: int,
    skip_invalid: bool = False,
    on_duplicate: str = "error",
    strip_cr: bool = False,
    keep_cr: bool = False,
    load_factor: float = 0.8,
    progress: bool | None = None,
    block_size: int = 4 << 20,
) -> list[BuildReport]:
    """Build `shards` tables from `data` in one pass; same rules as build_table.
    Nothing is written under the final names unless every shard succeeds."""
    check_shard_count(shards)
    if on_duplicate not in ("error", "first", "last"):
        raise ValueError(f"on_duplicate must be error, first or last, not {on_duplicate!r}")
    if strip_cr and keep_cr:
        raise ValueError("strip_cr and keep_cr exclude each other")
    t0 = time.perf_counter()
    data = Path(data)
    paths = shard_paths(out if out is not None else default_table_path(data), shards)
    st = os.stat(data)
    options = dict(skip_invalid=skip_invalid, on_duplicate=on_duplicate, strip_cr=strip_cr, keep_cr=keep_cr, load_factor=load_factor)
    bits = shards.bit_length() - 1
    total = BuildReport(source=str(data), table=str(paths[0].parent))
    reports = [BuildReport(source=str(data), table=str(p)) for p in paths]
    guess = st.st_size // (fmt.VALUE_AT + 1) // shards + 1024
    writers = [_TableWriter(p, capacity=guess, shard=(i, shards)) for i, p in enumerate(paths)]
    for w in writers:
        w.line_of = lambda ref, skipped, w=w: _source_line(data, w, ref)
    done: list[Path] = []
    try:
        with open(data, "rb") as f:
            reader = _LineReader(f, data, total, options, block_size)
            bar = _progress_bar(st.st_size, progress)
            for buf, starts, vlens, h64, checks, consumed in reader.blocks():
                _route(buf, starts, vlens, h64, checks, writers, bits)
                bar(consumed)
            bar(None)
        for i, (w, r) in enumerate(zip(writers, reports)):
            lo, hi = key_range(i, shards)
            meta = {
                "format": fmt.VERSION,
                "builder": f"kv {__import__('kv').__version__}",
                "source": {"name": data.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                "built_at": _build_time(st),
                "options": {**options, "shards": shards},
                "shard": {"index": i, "count": shards, "first_prefix": lo, "last_prefix": hi},
                "lines": total.lines,
                "skipped": total.skipped,
                "duplicates": 0,
            }
            w.finish(meta, r, data, reader.skipped_lines, on_duplicate, load_factor)
            done.append(w.out)
    except BaseException:
        for w in writers:
            w.abort()
        for p in done:  # all shards or none
            p.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    for r in reports:
        r.seconds = seconds
        r.lines = total.lines
        r.skipped = total.skipped
        r.skipped_sample = total.skipped_sample
        r.cr_stripped = total.cr_stripped
    return reports


def _source_line(data: Path, writer: _TableWriter, ref: int) -> int:
    """Input line number of a shard record: find its key in the data file.
    Used only for duplicate messages, so a scan is fine. Returns the first line
    holding the key whose occurrence count matches the record's (its nth copy)."""
    writer.f.flush()
    off = ref >> fmt.LEN_BITS
    with open(writer.tmp, "rb") as r:
        r.seek(off)
        key = r.read(fmt.KEY_LEN)
        r.seek(fmt.HEADER_SIZE)
        before = r.read(off - fmt.HEADER_SIZE)
    nth = sum(1 for line in before.split(b"\n") if line[: fmt.KEY_LEN] == key)
    seen = 0
    with open(data, "rb") as f:
        for number, line in enumerate(f, 1):
            if line[: fmt.KEY_LEN].lower() == key:
                if seen == nth:
                    return number
                seen += 1
    return 0


def _route(buf: bytes, starts, vlens, h64, checks, writers, bits: int) -> None:
    """Split one block's records by shard and hand each shard its records."""
    n = len(starts)
    if not n:
        return
    if bits == 0:
        writers[0].add(buf, starts, vlens, h64, checks)
        return
    arr = np.frombuffer(buf, dtype=np.uint8)
    first_byte = (_NIBBLE[arr[starts]] << 4) | _NIBBLE[arr[starts + 1]]
    shard = first_byte >> (8 - bits)
    order = np.argsort(shard, kind="stable")
    rec_len = (vlens + fmt.VALUE_AT + 1)[order]  # with the newline
    src = starts[order]
    out_starts = np.cumsum(rec_len) - rec_len
    total = int(rec_len.sum())
    # Gather every record's bytes in shard order: a concatenation of ranges.
    idx = np.arange(total, dtype=np.int64) + np.repeat(src - out_starts, rec_len)
    grouped = arr[idx]
    bounds = np.searchsorted(shard[order], np.arange(len(writers) + 1))
    for s, w in enumerate(writers):
        a, b = bounds[s], bounds[s + 1]
        if a == b:
            continue
        lo = out_starts[a]
        hi = out_starts[b - 1] + rec_len[b - 1]
        sel = order[a:b]
        w.add(grouped[lo:hi].tobytes(), out_starts[a:b] - lo, vlens[sel], h64[sel], checks[sel])


__all__ = ["MAX_SHARDS", "build_shards", "check_shard_count", "key_range", "shard_of", "shard_paths"]
