"""Checking a table file's header and metadata on open: every field that a
lookup relies on, in O(1), without touching the slot or record regions
(docs/FORMAT.md lists the same checks). kv/table.py calls these."""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

import xxhash

from . import format as fmt
from .errors import TableCorrupt

_xxh3 = xxhash.xxh3_64_intdigest


def check_header(mm: mmap.mmap, size: int, path: Path) -> fmt.Header:
    raw = mm[: fmt.HEADER.size]
    if raw[:8] != fmt.MAGIC:
        raise TableCorrupt(f"{path}: not a kv table (bad magic {raw[:8]!r}); build one with `kv build DATA`")
    h = fmt.Header.unpack(raw)
    if h.version not in fmt.VERSIONS:
        known = " and ".join(f"{v} ({kind} keys)" for v, kind in fmt.VERSIONS.items())
        raise TableCorrupt(
            f"{path}: table format version {h.version}, this kv reads versions {known}; upgrade kv, or rebuild the table with this one"
        )
    if _xxh3(raw[: fmt.HEADER_CHECKSUM_AT]) != h.header_checksum:
        raise TableCorrupt(f"{path}: header checksum mismatch; the file is damaged")
    if h.file_size != size:
        raise TableCorrupt(f"{path}: file is {size} bytes, header says {h.file_size}; truncated or appended to")
    if h.header_size != fmt.HEADER_SIZE:
        raise TableCorrupt(f"{path}: header size {h.header_size}, expected {fmt.HEADER_SIZE}")
    regions = [
        ("records", h.records_offset, h.records_size),
        ("slots", h.slots_offset, h.slot_count * fmt.SLOT_SIZE),
        ("metadata", h.meta_offset, h.meta_size),
    ]
    prev_end = h.header_size
    for name, off, length in regions:
        if off < prev_end or off + length > size:
            raise TableCorrupt(f"{path}: {name} region [{off}, {off + length}) lies outside the file or overlaps")
        if off % fmt.PAGE and name != "metadata":  # lookups rely on slots being 16-byte aligned
            raise TableCorrupt(f"{path}: {name} region starts at {off}, not on a {fmt.PAGE}-byte boundary")
        prev_end = off + length
    if not (1 <= h.home_slots < 1 << 32 and h.home_slots + h.max_displacement + 1 <= h.slot_count):
        raise TableCorrupt(
            f"{path}: slot counts are inconsistent (home {h.home_slots}, displacement {h.max_displacement}, total {h.slot_count})"
        )
    if h.record_count > h.slot_count:
        raise TableCorrupt(f"{path}: record count exceeds the slot count")
    if h.meta_size > fmt.MAX_META_SIZE:
        raise TableCorrupt(f"{path}: metadata of {h.meta_size} bytes exceeds {fmt.MAX_META_SIZE}")
    if not (h.shard_count >= 1 and h.shard_index < h.shard_count):
        raise TableCorrupt(f"{path}: shard {h.shard_index} of {h.shard_count} is impossible")
    return h


def read_meta(mm: mmap.mmap, h: fmt.Header, path: Path) -> dict[str, Any]:
    raw = mm[h.meta_offset : h.meta_offset + h.meta_size]
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise TableCorrupt(f"{path}: metadata is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(meta, dict):
        raise TableCorrupt(f"{path}: metadata is not a JSON object")
    if meta.get("format", h.version) != h.version:
        raise TableCorrupt(f"{path}: header says format version {h.version}, the metadata {meta.get('format')!r}; the file is damaged")
    return meta
