"""Write a table file from (key, value) pairs: how compaction folds a base
table and its change log into a new base, and how a writable root gets its
first, empty table.

The pairs are canonical keys (36-byte UUIDs or UTF-8 strings), each once, in
any order; the file is the one docs/FORMAT.md describes (the same layout the
builder writes: records in input order, slots placed by sorting on the hash).
Like the builder, it writes `.NAME.tmp-PID`, fsyncs, renames, fsyncs the
directory: a partial file is never visible under the final name.
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import xxhash

from . import __version__
from . import format as fmt
from .changelog import fsync_dir
from .options import DEFAULT_LOAD_FACTORS
from .writer import temp_path

_xxh3 = xxhash.xxh3_64_intdigest
SLOT_TYPE = np.dtype([("hash", "<u4"), ("check", "<u4"), ("ref", "<u8")])
FLUSH = 1 << 20


def write_table(
    out: str | os.PathLike, items: Iterable[tuple[bytes, bytes]], kind: str, meta: dict | None = None, load_factor: float | None = None
) -> str:
    """Write the table of `items` at `out`; return its generation. The load
    factor defaults to the one `kv build` uses for the key kind."""
    if load_factor is None:
        load_factor = DEFAULT_LOAD_FACTORS[kind]
    out = Path(out)
    tmp = temp_path(out)
    content = xxhash.xxh3_64()
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(fmt.HEADER_SIZE))
            h64, refs, checks, pos, value_bytes, pending = _write_records(f, items, kind, content)
            chunk = b"".join(pending) + bytes(fmt.align(pos) - pos)
            f.write(chunk)
            content.update(chunk)
            records_size = fmt.align(pos) - fmt.HEADER_SIZE
            slots_offset = fmt.HEADER_SIZE + records_size
            n = len(h64)
            slot_bytes, home_slots, slot_count, max_disp = _slot_region(h64, refs, checks, load_factor, slots_offset)
            meta_offset = slots_offset + len(slot_bytes)
            meta = dict(meta or {})
            meta.update(
                format=fmt.KIND_VERSION[kind],
                builder=f"kv {__version__}",
                records=n,
                value_bytes=value_bytes,
                load_factor=round(n / home_slots, 4) if n else 0.0,
                max_displacement=max_disp,
            )
            meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
            f.write(slot_bytes)
            f.write(meta_bytes)
            content.update(slot_bytes)
            content.update(meta_bytes)
            file_size = meta_offset + len(meta_bytes)
            header = fmt.Header(
                magic=fmt.MAGIC,
                version=fmt.KIND_VERSION[kind],
                header_size=fmt.HEADER_SIZE,
                record_count=n,
                value_bytes=value_bytes,
                home_slots=home_slots,
                slot_count=slot_count,
                max_displacement=max_disp,
                records_offset=fmt.HEADER_SIZE,
                records_size=records_size,
                slots_offset=slots_offset,
                meta_offset=meta_offset,
                meta_size=len(meta_bytes),
                file_size=file_size,
                content_checksum=(checksum := content.intdigest()),
                shard_index=0,
                shard_count=1,
                header_checksum=0,
            ).pack()
            header = header[: fmt.HEADER_CHECKSUM_AT] + _xxh3(header[: fmt.HEADER_CHECKSUM_AT]).to_bytes(8, "little")
            f.seek(0)
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return fmt.generation_id(checksum)


def _slot_region(h64: array, refs: array, checks: array, load_factor: float, slots_offset: int) -> tuple[bytes, int, int, int]:
    """The slot region's bytes (padded to a page) for records in input order,
    placed as docs/FORMAT.md says; and home slots, slot count, max displacement."""
    n = len(h64)
    hashes = np.frombuffer(h64, dtype=np.uint64) if n else np.zeros(0, np.uint64)
    order = np.argsort(hashes, kind="stable")  # by hash, ties in input (= ref) order
    h32 = (hashes[order] >> np.uint64(32)).astype(np.uint32)
    ref_col = (np.frombuffer(refs, dtype=np.uint64) if n else np.zeros(0, np.uint64))[order]
    check_col = (np.frombuffer(checks, dtype=np.uint32) if n else np.zeros(0, np.uint32))[order]
    home_slots = max(1, math.ceil(n / load_factor)) if n else 1
    home = (h32.astype(np.int64) * home_slots) >> 32
    steps = np.arange(n, dtype=np.int64)
    position = np.maximum.accumulate(home - steps) + steps if n else home  # pos[i] = max(home[i], pos[i-1] + 1)
    max_disp = int((position - home).max()) if n else 0
    used = max(home_slots, int(position[-1]) + 1) if n else home_slots
    slot_count = used + max(fmt.WINDOW, max_disp + 1)
    slots = np.zeros(slot_count, dtype=SLOT_TYPE)
    index = np.arange(slot_count, dtype=np.uint64)
    inside = index < np.uint64(home_slots)
    slots["hash"][~inside] = fmt.EMPTY_TAIL_HASH
    slots["hash"][inside] = ((index[inside] << np.uint64(32)) + np.uint64(home_slots - 1)) // np.uint64(home_slots)
    slots["hash"][position] = h32
    slots["check"][position] = check_col
    slots["ref"][position] = ref_col
    slot_bytes = slots.tobytes()
    slot_bytes += bytes(fmt.align(slots_offset + len(slot_bytes)) - slots_offset - len(slot_bytes))
    return slot_bytes, home_slots, slot_count, max_disp


def _write_records(
    f: BinaryIO, items: Iterable[tuple[bytes, bytes]], kind: str, content: Any
) -> tuple[array, array, array, int, int, list[bytes]]:
    """Write the records region (but its last bytes, returned as `pending`):
    each record's key hash, ref and check in input order, the end position and the value bytes."""
    h64, refs, checks = array("Q"), array("Q"), array("I")
    value_bytes = 0
    pos = fmt.HEADER_SIZE
    pending: list[bytes] = []
    size = 0
    uuid = kind == "uuid"
    for key, value in items:
        if uuid:
            rec = key + b" " + value
            raw = rec + b"\n"
        else:
            raw = rec = len(key).to_bytes(2, "little") + key + value
        h64.append(_xxh3(key))
        refs.append(pos << fmt.LEN_BITS | len(rec))
        checks.append(_xxh3(rec) & 0xFFFFFFFF)
        value_bytes += len(value)
        pending.append(raw)
        pos += len(raw)
        size += len(raw)
        if size >= FLUSH:
            chunk = b"".join(pending)
            f.write(chunk)
            content.update(chunk)
            pending, size = [], 0
    return h64, refs, checks, pos, value_bytes, pending
