"""A table writer written from docs/FORMAT.md alone, in plain Python: the
oracle the builder and the reader are tested against. Slow (a loop per
record) and for small tables only.

    data = reference_table([(b"user:42", b"value")], kind="string", meta={...})
"""

from __future__ import annotations

import json
import math
import struct

import xxhash

PAGE = 4096
HEADER = struct.Struct("<8sIIQQQQQQQQQQQQII")  # all fields before the header checksum


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def record_bytes(key: bytes, value: bytes, kind: str) -> tuple[bytes, int]:
    """(bytes written to the records region, record length the ref carries)."""
    if kind == "uuid":
        rec = key + b" " + value
        return rec + b"\n", len(rec)
    rec = len(key).to_bytes(2, "little") + key + value
    return rec, len(rec)


def reference_table(
    records: list[tuple[bytes, bytes]],
    *,
    kind: str = "string",
    load_factor: float = 0.8,
    meta: dict | None = None,
    shard: tuple[int, int] = (0, 1),
) -> bytes:
    """The table file for `records` (distinct keys, in input order)."""
    xxh3 = xxhash.xxh3_64_intdigest
    region = bytearray()
    entries = []  # (h64, ref, check)
    for key, value in records:
        raw, length = record_bytes(key, value, kind)
        off = PAGE + len(region)
        region += raw
        entries.append((xxh3(key), off << 24 | length, xxh3(raw[:length]) & 0xFFFFFFFF))
    entries.sort(key=lambda e: (e[0], e[1]))  # by hash, ties in input order
    n = len(entries)
    home_slots = max(1, math.ceil(n / load_factor)) if n else 1
    pos, prev, max_disp = [], -1, 0
    for h64, _, _ in entries:
        home = ((h64 >> 32) * home_slots) >> 32
        p = max(home, prev + 1)
        pos.append(p)
        max_disp = max(max_disp, p - home)
        prev = p
    used = max(home_slots, prev + 1)
    slot_count = used + max(16, max_disp + 1)
    slots = []
    for i in range(slot_count):
        empty_hash = -(-(i << 32) // home_slots) if i < home_slots else 0xFFFFFFFF
        slots.append([empty_hash, 0, 0])
    for (h64, ref, check), p in zip(entries, pos, strict=True):
        slots[p] = [h64 >> 32, check, ref]
    records_size = _align(PAGE + len(region)) - PAGE
    region += bytes(records_size - len(region))
    slot_bytes = b"".join(struct.pack("<IIQ", *s) for s in slots)
    slots_offset = PAGE + records_size
    slot_bytes += bytes(_align(slots_offset + len(slot_bytes)) - slots_offset - len(slot_bytes))
    meta_offset = slots_offset + len(slot_bytes)
    value_bytes = sum(len(v) for _, v in records)
    meta = dict(meta or {})
    meta.update(records=n, value_bytes=value_bytes, load_factor=round(n / home_slots, 4) if n else 0.0, max_displacement=max_disp)
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    body = bytes(region) + slot_bytes + meta_bytes
    file_size = PAGE + len(body)
    version = 1 if kind == "uuid" else 2
    head = HEADER.pack(
        b"KVTABLE\x00",
        version,
        PAGE,
        n,
        value_bytes,
        home_slots,
        slot_count,
        max_disp,
        PAGE,
        records_size,
        slots_offset,
        meta_offset,
        len(meta_bytes),
        file_size,
        xxh3(body),
        shard[0],
        shard[1],
    )
    head += xxh3(head).to_bytes(8, "little")
    return head + bytes(PAGE - len(head)) + body
