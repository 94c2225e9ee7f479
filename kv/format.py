"""The table file format: every constant and layout in one place.

docs/FORMAT.md describes the same bytes in prose; keep the two in step.

    [header, 4096 bytes][records][slots, 16 bytes each][metadata JSON]

All integers are little-endian. Records and slots start on 4096-byte
boundaries; the metadata follows the slots unpadded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import mmap

MAGIC = b"KVTABLE\x00"
# The format version names the key kind: 1, UUID keys (records are canonical
# data lines); 2, string keys (records are length-prefixed). Both share the
# header, slots and metadata; only the record layout and the key rules differ.
VERSION_UUID = 1
VERSION_STRING = 2
VERSION = VERSION_UUID  # what a UUID build writes
VERSIONS = {VERSION_UUID: "uuid", VERSION_STRING: "string"}
KIND_VERSION = {kind: version for version, kind in VERSIONS.items()}
PAGE = 4096
HEADER_SIZE = PAGE

# Slot: u32 hash (the top 32 bits of xxh3_64 of the canonical key), u32 check
# (the low 32 bits of xxh3_64 of the record's bytes), u64 ref (record offset
# << 24 | record length, the key, space and value). ref 0 marks an empty slot. One 16-byte slot holds all a
# lookup needs before it reads the record: one cache line, not two.
SLOT = struct.Struct("<IIQ")
SLOT_SIZE = SLOT.size  # 16
SLOT_TAIL = struct.Struct("<IQ")  # check and ref, read from slot offset + 4
LEN_BITS = 24
LEN_MASK = (1 << LEN_BITS) - 1
MAX_VALUE_LEN = LEN_MASK - 37  # 16 MiB - 38
MAX_RECORDS_SIZE = 1 << 40  # record offsets are 40 bits
# The slot array carries this many padding slots past the last used one, so the
# slots a lookup may search never run past the array.
WINDOW = 16
EMPTY_TAIL_HASH = 0xFFFFFFFF
# Record (version 1): the canonical data line, key (36 bytes), one space, value, newline.
KEY_LEN = 36
VALUE_AT = KEY_LEN + 1
# Record (version 2): u16 key length, the key's UTF-8 bytes, the value bytes
# (no separator, no terminator: the slot's ref carries the record length).
KEY_LEN_PREFIX = struct.Struct("<H")
MAX_STRING_KEY = 1024  # bytes of UTF-8
MAX_STRING_RECORD = LEN_MASK  # 2 + key + value
MAX_META_SIZE = 1 << 20

HEADER = struct.Struct(
    "<8s"  # magic
    "I"  # format version
    "I"  # header size
    "Q"  # record count
    "Q"  # value bytes (sum of value lengths)
    "Q"  # home slots (h32 * home_slots >> 32 gives a key's home slot)
    "Q"  # slot count (home slots + overflow + padding)
    "Q"  # max displacement (slots between a key's home and its slot)
    "Q"  # records offset
    "Q"  # records size
    "Q"  # slots offset
    "Q"  # meta offset
    "Q"  # meta size
    "Q"  # file size
    "Q"  # content checksum: xxh3_64 of bytes [header size, file size)
    "I"  # shard index
    "I"  # shard count (1 = not sharded)
    "Q"  # header checksum: xxh3_64 of the header bytes before this field
)


@dataclass(frozen=True)
class Header:
    magic: bytes
    version: int
    header_size: int
    record_count: int
    value_bytes: int
    home_slots: int
    slot_count: int
    max_displacement: int
    records_offset: int
    records_size: int
    slots_offset: int
    meta_offset: int
    meta_size: int
    file_size: int
    content_checksum: int
    shard_index: int
    shard_count: int
    header_checksum: int

    def pack(self) -> bytes:
        return HEADER.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview | mmap.mmap) -> Header:
        return cls(*HEADER.unpack_from(buf, 0))


HEADER_CHECKSUM_AT = HEADER.size - 8


def align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def home_slot(h32: int, home_slots: int) -> int:
    """A key's home slot: monotonic in its hash, so slots stay sorted by hash."""
    return (h32 * home_slots) >> 32


def generation_id(content_checksum: int) -> str:
    return f"{content_checksum:016x}"
