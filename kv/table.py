"""Read a table file through a read-only memory map.

Opening reads the 4 KiB header and the metadata and checks them; it never
touches the slot or record regions, so it takes the same time for 10 thousand
or 100 million records. Every worker process maps the same file with
ACCESS_READ: the kernel keeps one copy of its pages in the page cache for all.

The file is untrusted input: every offset taken from it is bounds-checked, and
every hit is checked against its record checksum before it is returned.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import xxhash

from . import format as fmt
from .errors import InvalidKey, TableCorrupt
from .header import check_header, read_meta
from .keys import canonical_key, string_key
from .speedups import native

if TYPE_CHECKING:
    import numpy as np

_xxh3 = xxhash.xxh3_64_intdigest
# A canonical key: the only form whose absence the fast path may report.
_CANONICAL = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
# A lookup: value bytes or None. It takes any object (str and bytes are keys;
# anything else raises InvalidKey), hence Any.
Getter = Callable[[Any], "bytes | None"]


@dataclass(frozen=True)
class Stats:
    records: int
    value_bytes: int
    file_bytes: int
    slots: int
    load_factor: float
    mean_probe: float
    max_probe: int


class Table:
    """A read-only table. `get(key)` returns the value bytes or None."""

    def __init__(self, path: str | os.PathLike[str], fd: int | None = None) -> None:
        """`fd`: an open descriptor of the file to map instead of opening `path`
        (which then only names it); it is duplicated, not taken."""
        self.path = Path(path)
        try:
            # O_NONBLOCK: opening a FIFO by mistake must not wait for a writer.
            fd = os.dup(fd) if fd is not None else os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise FileNotFoundError(f"table {self.path} does not exist") from None
        except PermissionError:
            raise PermissionError(f"table {self.path} is not readable by this user (uid {os.getuid()})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise TableCorrupt(f"{self.path}: not a regular file")
            if st.st_size < fmt.HEADER_SIZE:
                raise TableCorrupt(
                    f"{self.path}: {st.st_size} bytes is shorter than the {fmt.HEADER_SIZE}-byte header; truncated or not a table"
                )
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            self.header = h = check_header(self._mm, st.st_size, self.path)
            self.meta = read_meta(self._mm, h, self.path)
        except BaseException:
            self._mm.close()
            raise
        try:  # table pages are read at random: readahead only wastes page cache
            self._mm.madvise(mmap.MADV_RANDOM)
        except (AttributeError, OSError):
            pass
        self.key_kind = fmt.VERSIONS[h.version]  # "uuid" or "string"
        self.generation = fmt.generation_id(h.content_checksum)
        self.mtime_ns = st.st_mtime_ns
        self.inode = (st.st_dev, st.st_ino)
        self.get: Getter = self._make_get()

    # -- the hot path ----------------------------------------------------------

    def _make_get(self) -> Getter:
        """`get`: the C lookup when kv._speedups is built (same algorithm and
        checks as `_probe`, about 4x faster), else the Python closure below."""
        c = native()
        if c is not None and (self.key_kind == "uuid" or hasattr(c, "KIND_STRING")):
            h = self.header
            self.implementation: str = "c"
            kind = c.KIND_STRING if self.key_kind == "string" else 0
            args = (
                self._mm,
                h.home_slots,
                h.slots_offset,
                h.max_displacement,
                h.records_offset,
                h.records_size,
                self._get_slow,
                self._corrupt,
            )
            return c.Lookup(*args, kind) if kind else c.Lookup(*args)
        self.implementation = "python"
        return self._make_python_get() if self.key_kind == "uuid" else self._make_python_get_str()

    def _make_python_get(self) -> Getter:
        """Build `get` as a closure over locals: each attribute or global
        looked up per call costs about as much as the hash, so none is."""
        mm = self._mm
        find = mm.find
        h = self.header
        home_slots = h.home_slots
        slots = h.slots_offset
        span = (h.max_displacement + 1) * fmt.SLOT_SIZE  # every slot a key may sit in
        rec_lo = h.records_offset
        rec_hi = h.records_offset + h.records_size
        tail = fmt.SLOT_TAIL.unpack_from
        xxh3 = _xxh3
        VA = fmt.VALUE_AT
        canonical = _CANONICAL
        slow = self._get_slow
        corrupt = self._corrupt

        def get(key: Any) -> bytes | None:  # Any: see Getter
            """Value bytes for `key`, or None if absent. Raises InvalidKey for a
            malformed key and TableCorrupt when the file is damaged."""
            # Hash the caller's bytes as they are: no parsing on the hit path.
            # One mmap.find looks for the 4 hash bytes in every slot the key
            # may occupy (C speed, and usually within one cache line).
            try:  # free in 3.11 unless raised
                kb = key.encode() if key.__class__ is str else key
                h32 = xxh3(kb) >> 32
            except (TypeError, UnicodeError):  # not str or bytes; a lone surrogate
                return slow(key)  # raises InvalidKey
            a = slots + (((h32 * home_slots) >> 32) << 4)
            i = find(h32.to_bytes(4, "little"), a, a + span)
            if not i & 15:  # -1, or a match inside a slot's other fields: no hit
                check, ref = tail(mm, i + 4)
                off = ref >> 24
                end = off + (ref & 0xFFFFFF)
                if rec_lo <= off and end <= rec_hi:
                    rec = mm[off:end]
                    # Whole-key equality: a prefix of a key must not pass for it
                    # (and a slice compare is faster than rec.startswith).
                    if rec[:36] == kb:
                        if xxh3(rec) & 0xFFFFFFFF == check:
                            return rec[VA:]
                        corrupt(off)
                elif ref:
                    corrupt(off)
            elif i < 0 and canonical(kb):
                return None  # a canonical key, in none of the slots it may occupy
            return slow(key)  # upper case, 32-hex, malformed, empty slot, shared hash

        return get

    def _make_python_get_str(self) -> Getter:
        """`get` for string keys (format version 2): the same single `find`
        over the key's slot window, repeated past slots that share its 32-bit
        hash; a record is `u16 key length, key, value`."""
        mm = self._mm
        find = mm.find
        h = self.header
        home_slots = h.home_slots
        slots = h.slots_offset
        span = (h.max_displacement + 1) * fmt.SLOT_SIZE
        rec_lo = h.records_offset
        rec_hi = h.records_offset + h.records_size
        tail = fmt.SLOT_TAIL.unpack_from
        xxh3 = _xxh3
        slow = self._get_slow
        corrupt = self._corrupt

        def get(key: Any) -> bytes | None:  # Any: see Getter
            """Value bytes for `key`, or None if absent. Raises InvalidKey for
            an empty, overlong or non-UTF-8 key, TableCorrupt when damaged."""
            try:
                kb = key.encode() if key.__class__ is str else key
                n = len(kb)
                h32 = xxh3(kb) >> 32
            except (TypeError, UnicodeError):
                return slow(key)  # raises InvalidKey
            if not 0 < n <= 1024:
                return slow(key)
            a = slots + (((h32 * home_slots) >> 32) << 4)
            stop = a + span
            needle = h32.to_bytes(4, "little")
            i = find(needle, a, stop)
            while i >= 0:
                if not i & 15:
                    check, ref = tail(mm, i + 4)
                    off = ref >> 24
                    end = off + (ref & 0xFFFFFF)
                    if not (rec_lo <= off and off + 2 <= end <= rec_hi):
                        if ref:
                            corrupt(off)
                    elif mm[off] | mm[off + 1] << 8 == n and mm[off + 2 : off + 2 + n] == kb:
                        rec = mm[off:end]
                        if xxh3(rec) & 0xFFFFFFFF == check and n + 2 <= len(rec):
                            return rec[n + 2 :]
                        corrupt(off)
                i = find(needle, i + 1, stop)
            if key.__class__ is bytes and not kb.isascii():
                return slow(key)  # raises InvalidKey for bytes that are not UTF-8
            return None

        return get

    def _corrupt(self, off: int) -> NoReturn:
        raise TableCorrupt(f"{self.path}: record at offset {off} is out of bounds or fails its checksum; run `kv verify`")

    def _get_slow(self, key: Any) -> bytes | None:
        """Full lookup: validate and canonicalise the key, then probe each slot
        a key with its hash may occupy, stopping at a larger hash."""
        if self.key_kind == "string":
            return self._probe_str(string_key(key))
        return self._probe(canonical_key(key))

    def _probe(self, kb: bytes) -> bytes | None:
        h = self.header
        mm = self._mm
        h32 = _xxh3(kb) >> 32
        p = fmt.home_slot(h32, h.home_slots)
        rec_lo, rec_hi = h.records_offset, h.records_offset + h.records_size
        for i in range(p, p + h.max_displacement + 1):
            sh, check, ref = fmt.SLOT.unpack_from(mm, h.slots_offset + i * fmt.SLOT_SIZE)
            if sh > h32:
                return None
            if sh < h32 or ref == 0:
                continue
            off = ref >> fmt.LEN_BITS
            end = off + (ref & fmt.LEN_MASK)
            if not (rec_lo <= off and end <= rec_hi) or _xxh3(mm[off:end]) & 0xFFFFFFFF != check:
                self._corrupt(off)
            if mm[off : off + fmt.KEY_LEN] == kb:
                return mm[off + fmt.VALUE_AT : end]
        return None

    def _probe_str(self, kb: bytes) -> bytes | None:
        h = self.header
        mm = self._mm
        h32 = _xxh3(kb) >> 32
        p = fmt.home_slot(h32, h.home_slots)
        for i in range(p, p + h.max_displacement + 1):
            sh, check, ref = fmt.SLOT.unpack_from(mm, h.slots_offset + i * fmt.SLOT_SIZE)
            if sh > h32:
                return None
            if sh < h32 or ref == 0:
                continue
            key, value = self._record(check, ref)
            if key == kb:
                return value
        return None

    def _record(self, check: int, ref: int) -> tuple[bytes, bytes]:
        """The (key, value) of the record a slot points at, bounds- and checksum-checked."""
        h = self.header
        mm = self._mm
        off = ref >> fmt.LEN_BITS
        end = off + (ref & fmt.LEN_MASK)
        if not (h.records_offset <= off and end <= h.records_offset + h.records_size) or _xxh3(mm[off:end]) & 0xFFFFFFFF != check:
            self._corrupt(off)
        if self.key_kind == "uuid":
            if end - off < fmt.VALUE_AT:
                self._corrupt(off)
            return mm[off : off + fmt.KEY_LEN], mm[off + fmt.VALUE_AT : end]
        n = mm[off] | mm[off + 1] << 8 if end - off >= 2 else -1
        if not 0 < n <= fmt.MAX_STRING_KEY or off + 2 + n > end:
            self._corrupt(off)
        return mm[off + 2 : off + 2 + n], mm[off + 2 + n : end]

    def validate_key(self, key: str | bytes) -> bytes:
        """The key as this table stores it (canonical UUID, or UTF-8 bytes); raises InvalidKey."""
        return string_key(key) if self.key_kind == "string" else canonical_key(key)

    def get_canonical(self, key: str | bytes) -> tuple[bytes, bytes | None]:
        """(canonical key, value or None); raises InvalidKey. For batch answers."""
        kb = self.validate_key(key)
        return kb, self.get(kb)

    # -- mapping protocol --------------------------------------------------------

    def __len__(self) -> int:
        return self.header.record_count

    def __contains__(self, key: object) -> bool:
        try:
            return self.get(key) is not None
        except InvalidKey:
            return False

    def __getitem__(self, key: str | bytes) -> bytes:
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in slot order, each record checked."""
        h = self.header
        mm = self._mm
        for i in range(h.slot_count):
            _, check, ref = fmt.SLOT.unpack_from(mm, h.slots_offset + i * fmt.SLOT_SIZE)
            if ref:
                yield self._record(check, ref)

    # -- metadata and health -------------------------------------------------------

    @property
    def value_bytes(self) -> int:
        return self.header.value_bytes

    @property
    def file_bytes(self) -> int:
        return self.header.file_size

    @property
    def source(self) -> dict[str, Any]:
        return self.meta.get("source", {})

    def stats(self) -> Stats:
        """Load factor and probe lengths, computed from the slot arrays (reads them)."""
        import numpy as np

        h = self.header
        slots = self._slots()
        used = np.flatnonzero(slots["ref"] != 0)
        home = (slots["hash"][used].astype(np.uint64) * np.uint64(h.home_slots)) >> np.uint64(32)
        del slots  # a live view of the map would make close() fail with BufferError
        probe = used - home.astype(np.int64) + 1
        return Stats(
            records=h.record_count,
            value_bytes=h.value_bytes,
            file_bytes=h.file_size,
            slots=h.slot_count,
            load_factor=h.record_count / h.home_slots if h.home_slots else 0.0,
            mean_probe=float(probe.mean()) if len(probe) else 0.0,
            max_probe=int(probe.max()) if len(probe) else 0,
        )

    def _slots(self) -> np.ndarray:
        import numpy as np

        slot_type = np.dtype([("hash", "<u4"), ("check", "<u4"), ("ref", "<u8")])
        h = self.header
        return np.frombuffer(self._mm, dtype=slot_type, count=h.slot_count, offset=h.slots_offset)

    def verify(self) -> None:
        """Check the whole file: content checksum, then slot structure and every
        record's checksum (vectorised). Raises TableCorrupt naming the first fault."""
        import numpy as np

        h = self.header
        mm = self._mm
        if mm[fmt.HEADER.size : h.header_size].count(0) != h.header_size - fmt.HEADER.size:
            raise TableCorrupt(f"{self.path}: header padding (bytes {fmt.HEADER.size}-{h.header_size - 1}) is not all zero")
        x = xxhash.xxh3_64()
        step = 16 << 20
        for a in range(h.header_size, h.file_size, step):
            x.update(mm[a : min(a + step, h.file_size)])
        if x.intdigest() != h.content_checksum:
            raise TableCorrupt(
                f"{self.path}: content checksum mismatch (header says {h.content_checksum:016x}, content is {x.intdigest():016x})"
            )
        slots = self._slots()
        unsorted = bool(np.any(slots["hash"][1:] < slots["hash"][:-1]))
        used = int(np.count_nonzero(slots["ref"]))
        del slots  # a live view of the map would make close() fail with BufferError
        if unsorted:
            raise TableCorrupt(f"{self.path}: slot hashes are not sorted")
        if used != h.record_count:
            raise TableCorrupt(f"{self.path}: {used} occupied slots, header says {h.record_count} records")
        count = 0
        for key, _ in self.items():
            if self.get(key) is None:  # the lookup that serves: C when built
                raise TableCorrupt(f"{self.path}: key {key.decode('utf-8', 'replace')!r} is stored but not found by lookup")
            count += 1
        if count != h.record_count:
            raise TableCorrupt(f"{self.path}: {count} records readable, header says {h.record_count}")

    def close(self) -> None:
        get, self.get = self.get, _closed
        release = getattr(get, "release", None)
        if release is not None:  # the C lookup holds a view of the map
            release()
        self._mm.close()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Table({str(self.path)!r}, keys={self.key_kind}, records={len(self)}, generation={self.generation})"


def _closed(key: Any) -> NoReturn:
    raise ValueError("table is closed")


def open_table(path: str | os.PathLike[str], fd: int | None = None) -> Table:
    """Map the table at `path` (or the open descriptor `fd` of it) read-only.
    Raises TableCorrupt for a truncated, foreign, damaged or other-version
    file, FileNotFoundError if missing."""
    return Table(path, fd)
