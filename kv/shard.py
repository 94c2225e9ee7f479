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
from .build import BuildReport, default_table_path, table_meta
from .duplicates import Occurrence
from .keys import shard_of
from .lines import BLOCK, Records, SkippedLines, key_lines, read_records
from .options import BuildOptions
from .writer import TableWriter, discard_temp

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
    out: str | os.PathLike | None,
    shards: int,
    options: BuildOptions = BuildOptions(),
    *,
    progress: bool | None = None,
    block_size: int = BLOCK,
) -> list[BuildReport]:
    """Build `shards` tables from `data` in one pass; same rules as build_table.
    Nothing is written under the final names unless every shard succeeds, and
    no temporary file remains when one fails."""
    check_shard_count(shards)
    t0 = time.perf_counter()
    data = Path(data)
    options = options.for_data(data)
    paths = shard_paths(out if out is not None else default_table_path(data), shards)
    st = os.stat(data)
    total = BuildReport(source=str(data), table=str(paths[0].parent))
    reports = [BuildReport(source=str(data), table=str(p)) for p in paths]
    guess = st.st_size // (fmt.VALUE_AT + 1) // shards + 1024
    writers: list[ShardWriter] = []
    done: list[Path] = []
    try:
        for i, p in enumerate(paths):
            writers.append(ShardWriter(p, capacity=guess, shard=(i, shards), data=data, key_kind=options.key_kind))
        bits = shards.bit_length() - 1
        seen = [0]  # records read so far: each string record's ordinal in the input
        skipped = read_records(
            data,
            total,
            options,
            lambda records: _route(records, writers, bits, seen),
            size=st.st_size,
            progress=progress,
            block_size=block_size,
        )
        for w, r in zip(writers, reports, strict=False):
            w.finish(_shard_meta(data, st, options, total, w.shard), r, data, skipped, options)
            done.append(w.out)
    except BaseException:
        for w in writers:
            w.abort()
        for p in paths[len(writers) :]:  # a writer stopped while being made may have left its file
            discard_temp(p)
        for p in done:  # all shards or none
            p.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    for r in reports:  # the read is shared: so are its counts
        r.seconds = seconds
        r.lines = total.lines
        r.skipped = total.skipped
        r.skipped_sample = total.skipped_sample
        r.cr_stripped = total.cr_stripped
    return reports


def _shard_meta(data: Path, st: os.stat_result, options: BuildOptions, total: BuildReport, shard: tuple[int, int]) -> dict:
    """A shard's metadata: a table's, the shard count among the options, and which keys it holds."""
    index, count = shard
    lo, hi = key_range(index, count)
    meta = table_meta(data, st, {**options.recorded(), "shards": count}, total)
    meta["shard"] = {"index": index, "count": count, "first_prefix": lo, "last_prefix": hi}
    return meta


class ShardWriter(TableWriter):
    """A shard's table. Its records are a subset of the input's, so a record's
    input line is found in the data file, by key."""

    def __init__(self, out: Path, capacity: int, shard: tuple[int, int], data: Path, key_kind: str = "uuid") -> None:
        super().__init__(out, capacity, shard, key_kind)
        self.data = data
        self.ordinals: list[np.ndarray] = []  # string shards: each record's ordinal among the input's records

    def lines_of(self, found: list[Occurrence], skipped: SkippedLines) -> list[int]:
        """Input lines of the records: the nth record of a key in the shard is
        the nth line of that key in the input (all of a key's lines go to one
        shard). One pass over the data file for all of them. A string
        record's line comes from its rank among the shard's records instead
        (see TableWriter.lines_of), mapped through the shard's own record
        lines, which the writer keeps for string shards."""
        if self.version != fmt.VERSION_UUID:
            ordinals = np.concatenate(self.ordinals)
            refs = self._all_refs
            assert refs is not None, "lines_of is called from finish()"
            return [skipped.line_of_record(int(ordinals[np.count_nonzero(refs < o.ref)])) for o in found]
        lines = key_lines(self.data, [(o.key, o.nth) for o in found], skipped)
        return [lines.get((o.key, o.nth), 0) for o in found]


def _route(records: Records, writers: list[ShardWriter], bits: int, seen: list[int]) -> None:
    """Split one block's records by shard and hand each shard its records."""
    buf, starts, vlens, h64, checks, lens = records
    n = len(starts)
    if not n:
        return
    base = seen[0]
    seen[0] += n
    if bits == 0:
        writers[0].add(records)
        if lens is not None:
            writers[0].ordinals.append(np.arange(base, base + n, dtype=np.int64))
        return
    arr = np.frombuffer(buf, dtype=np.uint8)
    if lens is None:  # UUID keys: the leading bits of the key's first byte (nginx routes on them)
        first_byte = (_NIBBLE[arr[starts]] << 4) | _NIBBLE[arr[starts + 1]]
        shard = first_byte >> (8 - bits)
    else:  # string keys: the low bits of the key's hash (kv.keys.string_shard_of)
        shard = (h64 & np.uint64((1 << bits) - 1)).astype(np.int64)
    order = np.argsort(shard, kind="stable")
    rec_len = records.spans()[order]  # a UUID record's newline included
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
        w.add(
            Records(grouped[lo:hi].tobytes(), out_starts[a:b] - lo, vlens[sel], h64[sel], checks[sel], None if lens is None else lens[sel])
        )
        if lens is not None:
            w.ordinals.append(sel.astype(np.int64) + base)


__all__ = ["MAX_SHARDS", "build_shards", "check_shard_count", "key_range", "shard_of", "shard_paths"]
