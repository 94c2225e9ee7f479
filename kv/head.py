"""ROOT/head: one shared page that tells every worker what the root serves.

    offset  size  field
         0     8  magic b"KVHEAD\\x00\\x01"
         8     4  version (1)
        12     4  key kind: 1 UUID, 2 string (format versions)
        16     8  change counter: odd while the writer updates the page
        24     8  epoch: the change log in use, ROOT/log/<epoch>.log
        32     8  committed log size: bytes of that log readers may apply
        40     8  sequence number of the last committed write (0: none yet)
        48     8  changes: entries in the log (sets and deletes), for compaction
        56    16  base generation (ASCII hex): ROOT/generations/<base>.kvt
        72  4024  zero

All integers little-endian. Every worker maps the page read-only (the
writers, who hold ROOT/.write.lock, map it read-write) and compares the
change counter with the value it last applied, one `unpack_from` per
request. Only when the counter moved does it read the rest, seqlock-style:
counter, fields, counter again; an odd or changed counter means an update
raced the read, and the reader tries again (a bounded number of times, then
keeps what it has until its next request). Readers never wait for a writer.

The page is derived state, never the truth: it is not fsynced, and `kv serve`
rebuilds it from ROOT/current and the change log when it starts (see
kv/writes.py, `recover`). It is updated in place and never replaced, so a
mapping taken once stays the page every writer updates.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import KVError

MAGIC = b"KVHEAD\x00\x01"
VERSION = 1
SIZE = 4096
FIELDS = struct.Struct("<8sIIQQQQQ16s")  # the whole layout above, to offset 72
COUNTER_AT = 16
COUNTER = struct.Struct("<Q")
BODY_AT = 24  # epoch .. base: what an update rewrites
BODY = struct.Struct("<QQQQ16s")
KINDS = {1: "uuid", 2: "string"}
KIND_CODES = {kind: code for code, kind in KINDS.items()}
READ_TRIES = 1000  # seqlock retries before a reader gives up until its next request


class HeadError(KVError):
    """ROOT/head is missing, foreign or of another version."""


@dataclass(frozen=True)
class HeadState:
    """What a head page says (all but the counter)."""

    kind: str
    epoch: int
    log_size: int
    seq: int
    changes: int
    base: str

    def pack_body(self) -> bytes:
        return BODY.pack(self.epoch, self.log_size, self.seq, self.changes, self.base.encode().ljust(16, b"\0"))


def head_path(root: str | os.PathLike) -> Path:
    return Path(root) / "head"


class Head:
    """A mapping of ROOT/head. `counter()` is the per-request check."""

    def __init__(self, path: str | os.PathLike, writable: bool = False):
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            if os.fstat(fd).st_size < SIZE:
                raise HeadError(f"{self.path}: shorter than {SIZE} bytes; not a kv head page")
            self.mm = mmap.mmap(fd, SIZE, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        magic, version = struct.unpack_from("<8sI", self.mm, 0)
        if magic != MAGIC or version != VERSION:
            self.mm.close()
            raise HeadError(f"{self.path}: not a kv head page of version {VERSION} (magic {magic!r}, version {version})")
        self.writable = writable
        unpack = COUNTER.unpack_from
        mm = self.mm
        self.counter = lambda: unpack(mm, COUNTER_AT)[0]

    def read(self) -> tuple[int, HeadState] | None:
        """(counter, state) read consistently, or None when every try raced an
        update (or a writer died halfway through one: see `Writer`)."""
        mm = self.mm
        for _ in range(READ_TRIES):
            fields = FIELDS.unpack_from(mm, 0)
            c1 = fields[3]
            if c1 & 1:
                continue
            if COUNTER.unpack_from(mm, COUNTER_AT)[0] != c1:
                continue
            _, _, kind, _, epoch, log_size, seq, changes, base = fields
            return c1, HeadState(KINDS.get(kind, "uuid"), epoch, log_size, seq, changes, base.rstrip(b"\0").decode("ascii", "replace"))
        return None

    def update(self, state: HeadState) -> int:
        """Publish `state` (writers only, under ROOT/.write.lock): counter odd,
        the fields, counter even and larger. Returns the new counter."""
        mm = self.mm
        c = COUNTER.unpack_from(mm, COUNTER_AT)[0]
        odd = c + 1 if c % 2 == 0 else c  # odd already: a writer died mid-update
        COUNTER.pack_into(mm, COUNTER_AT, odd)
        struct.pack_into("<I", mm, 12, KIND_CODES[state.kind])
        mm[BODY_AT : BODY_AT + BODY.size] = state.pack_body()
        COUNTER.pack_into(mm, COUNTER_AT, odd + 1)
        return odd + 1

    def torn(self) -> bool:
        """True when the counter is odd: an update was interrupted."""
        return bool(self.counter() & 1)

    def close(self) -> None:
        self.mm.close()


def create_head(path: str | os.PathLike, state: HeadState) -> None:
    """Write a new head page under a temporary name and rename it into place
    (only when none exists: an existing page is updated in place)."""
    path = Path(path)
    tmp = path.with_name(f".head.tmp-{os.getpid()}")
    page = bytearray(SIZE)
    FIELDS.pack_into(
        page,
        0,
        MAGIC,
        VERSION,
        KIND_CODES[state.kind],
        2,
        state.epoch,
        state.log_size,
        state.seq,
        state.changes,
        state.base.encode().ljust(16, b"\0"),
    )
    with open(tmp, "wb") as f:
        f.write(page)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
