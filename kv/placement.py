"""Slot placement: where each record's slot goes, as pure functions on numpy
arrays (docs/FORMAT.md, "Slots").

Records are sorted by key hash. A key's home slot, (h32 * home_slots) >> 32,
grows with its hash, so linear probing in hash order needs no table to probe:
a key's slot is pos[i] = max(home[i], pos[i-1] + 1), a running maximum.
Everything works in chunks of CHUNK records so that no second full-size
temporary exists at the build's memory peak.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from .errors import DataFormatError
from .speedups import native

CHUNK = 1 << 20
SLOT_TYPE = np.dtype([("hash", "<u4"), ("check", "<u4"), ("ref", "<u8")])
assert SLOT_TYPE.itemsize == fmt.SLOT_SIZE


def record_refs(starts: np.ndarray, offset: int, lens: np.ndarray) -> np.ndarray:
    """Slot refs of one block's records, written at file `offset`:
    record offset << 24 | record length (`lens`)."""
    return ((starts.astype(np.uint64) + np.uint64(offset)) << np.uint64(fmt.LEN_BITS)) | lens.astype(np.uint64)


def sort_by_hash(columns: list[np.ndarray]) -> None:
    """Sort [h64, refs, checks] by hash, equal hashes in input order (refs
    grow with input position, so that is the order of (hash, ref)). Replaces
    the list's arrays one at a time, so pass the only references to them."""
    c = native()
    if c is not None:  # in place and in linear time: no index array, no copies
        c.sort_records(*columns)
        return
    order = np.argsort(columns[0], kind="stable")
    for i in range(len(columns)):
        columns[i] = columns[i][order]


def equal_hash_runs(h64: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) rows of each run of equal hashes in sorted `h64`."""
    runs: list[list[int]] = []
    for s in np.flatnonzero(h64[1:] == h64[:-1]).tolist():
        if runs and runs[-1][1] == s:
            runs[-1][1] = s + 1
        else:
            runs.append([s, s + 1])
    return [(a, b) for a, b in runs]


def to_hash32(h64: np.ndarray) -> np.ndarray:
    """The slots' hash column: the top 32 bits. Shifts `h64` in place."""
    h64 >>= np.uint64(32)
    return h64.astype(np.uint32)


def home_slot_count(records: int, load_factor: float) -> int:
    """H: ceil(records / load_factor), at least 1."""
    home_slots = max(1, math.ceil(records / load_factor)) if records else 1
    if home_slots >= 1 << 31:  # homes are computed in signed 64-bit arithmetic
        raise DataFormatError(f"{records:,} records is more than one table holds (about 1.7 billion); build shards (--shards)")
    return home_slots


def positions(h32: np.ndarray, home_slots: int) -> np.ndarray:
    """Each sorted key's slot: pos[i] = max(home[i], pos[i-1] + 1)
    = i + running max of (home - i), in place (8 bytes a record)."""
    pos = h32.astype(np.int64)
    pos *= home_slots
    pos >>= 32
    carry = np.iinfo(np.int64).min
    for a in range(0, len(pos), CHUNK):
        chunk = pos[a : a + CHUNK]
        steps = np.arange(a, a + len(chunk), dtype=np.int64)
        chunk -= steps
        chunk[0] = max(int(chunk[0]), carry)
        np.maximum.accumulate(chunk, out=chunk)
        carry = int(chunk[-1])
        chunk += steps
    return pos


def max_displacement(h32: np.ndarray, pos: np.ndarray, home_slots: int) -> int:
    """D: the largest distance from a key's home slot to its slot."""
    most = 0
    for a in range(0, len(pos), CHUNK):
        home = (h32[a : a + CHUNK].astype(np.int64) * home_slots) >> 32
        most = max(most, int((pos[a : a + CHUNK] - home).max()))
    return most


@dataclass(frozen=True)
class Layout:
    """Where the slots go: H, each sorted key's slot, D and the slot count."""

    home_slots: int
    positions: np.ndarray
    max_displacement: int
    slot_count: int

    @property
    def load_factor(self) -> float:
        """As built, rounded as the metadata records it."""
        n = len(self.positions)
        return round(n / self.home_slots, 4) if n else 0.0


def place(h32: np.ndarray, load_factor: float) -> Layout:
    """The layout of the sorted hashes `h32` at `load_factor`."""
    home_slots = home_slot_count(len(h32), load_factor)
    pos = positions(h32, home_slots)
    disp = max_displacement(h32, pos, home_slots)
    used = max(home_slots, int(pos[-1]) + 1) if len(pos) else home_slots
    # Padding: a lookup searches D + 1 slots from its home slot.
    return Layout(home_slots, pos, disp, used + max(fmt.WINDOW, disp + 1))


def empty_slots(a: int, b: int, home_slots: int) -> np.ndarray:
    """Slots a..b-1, all empty. An empty slot holds the smallest hash whose
    home is that slot (past the home slots: the largest hash), so the hash
    column stays sorted."""
    block = np.zeros(b - a, dtype=SLOT_TYPE)
    slots = np.arange(a, b, dtype=np.uint64)
    inside = slots < np.uint64(home_slots)
    block["hash"][~inside] = fmt.EMPTY_TAIL_HASH
    block["hash"][inside] = ((slots[inside] << np.uint64(32)) + np.uint64(home_slots - 1)) // np.uint64(home_slots)
    return block


def slot_blocks(h32: np.ndarray, checks: np.ndarray, refs: np.ndarray, layout: Layout) -> Iterator[np.ndarray]:
    """The slot region, CHUNK slots at a time, in file order."""
    pos = layout.positions
    for a in range(0, layout.slot_count, CHUNK):
        b = min(a + CHUNK, layout.slot_count)
        block = empty_slots(a, b, layout.home_slots)
        i, j = np.searchsorted(pos, [a, b])
        at = pos[i:j] - a
        block["hash"][at] = h32[i:j]
        block["check"][at] = checks[i:j]
        block["ref"][at] = refs[i:j]
        yield block


def value_bytes_of(refs: np.ndarray) -> int:
    """The sum of the value lengths the refs point at."""
    total, mask = 0, np.uint64(fmt.LEN_MASK)
    for a in range(0, len(refs), CHUNK):  # chunked: no full-size temporary at the memory peak
        total += int((refs[a : a + CHUNK] & mask).sum(dtype=np.uint64))
    return total - fmt.VALUE_AT * len(refs)
