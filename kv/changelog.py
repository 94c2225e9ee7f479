"""The change log: ROOT/log/<epoch>.log, the writes made since a base table.

    [log header, 64 bytes][group][group]...

Log header (little-endian):

    offset size field
         0    8  magic b"KVLOG\\x00\\x00\\x01"
         8    4  version (1)
        12    4  key kind: 1 UUID, 2 string
        16    8  epoch (the number in the file name)
        24    8  previous epoch: the state `kv rollback` returns to (0: none)
        32    8  sequence floor: the largest sequence number used anywhere
                 when this log was made; writes appended here use larger ones
        40   16  base generation (ASCII hex): the table these changes apply to
        56    8  xxh3_64 of bytes 0-55

A group is one committed write, applied all or nothing:

    u32 payload length, u32 entry count, u64 sequence number
    payload: entries, each u8 op (1 set, 2 delete), u16 key length,
             u32 value length (0 for a delete), key bytes, value bytes
    u64 xxh3_64 of the 16 group-header bytes and the payload

Keys are stored canonical (lower-case 8-4-4-4-12 UUIDs, or UTF-8 strings),
so a reader applies them without parsing. A group that does not fit in the
file, or whose checksum fails, ends the log: it and everything after it is a
torn tail (a write that crashed before its fsync), never served. A log is
appended to only under ROOT/.write.lock, and only up to the committed size
ROOT/head names; its header is written once, at creation.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .errors import KVError

MAGIC = b"KVLOG\x00\x00\x01"
VERSION = 1
HEADER = struct.Struct("<8sIIQQQ16s")  # then u64 checksum
HEADER_SIZE = HEADER.size + 8  # 64
GROUP = struct.Struct("<IIQ")  # payload length, entry count, sequence
ENTRY = struct.Struct("<BHI")  # op, key length, value length
CHECK = struct.Struct("<Q")
SET, DELETE = 1, 2
MAX_GROUP = 1 << 30  # a larger length field is damage, not a write
KIND_CODES = {"uuid": 1, "string": 2}
KINDS = {1: "uuid", 2: "string"}
Entry = tuple[int, bytes, bytes]  # op, key, value

_xxh3 = xxhash.xxh3_64_intdigest


class ChangeLogCorrupt(KVError):
    """A change log whose header is damaged or foreign, or whose committed part fails its checksums."""


@dataclass(frozen=True)
class LogHeader:
    kind: str
    epoch: int
    prev_epoch: int
    seq_floor: int
    base: str

    def pack(self) -> bytes:
        raw = HEADER.pack(
            MAGIC, VERSION, KIND_CODES[self.kind], self.epoch, self.prev_epoch, self.seq_floor, self.base.encode().ljust(16, b"\0")
        )
        return raw + CHECK.pack(_xxh3(raw))


@dataclass(frozen=True)
class Group:
    seq: int
    entries: list[Entry]  # value b"" for a delete
    start: int  # offset of the group in the log
    end: int  # offset just past it


def log_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "log"


def log_path(root: str | os.PathLike, epoch: int) -> Path:
    return log_dir(root) / f"{epoch}.log"


def epochs(root: str | os.PathLike) -> list[int]:
    """The epochs of the logs in ROOT/log, ascending."""
    try:
        names = os.listdir(log_dir(root))
    except FileNotFoundError:
        return []
    return sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())


def parse_header(raw: bytes, path: str | os.PathLike) -> LogHeader:
    if len(raw) < HEADER_SIZE:
        raise ChangeLogCorrupt(f"{path}: {len(raw)} bytes is shorter than the {HEADER_SIZE}-byte log header")
    magic, version, kind, epoch, prev, floor, base = HEADER.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION:
        raise ChangeLogCorrupt(f"{path}: not a kv change log of version {VERSION} (magic {magic!r})")
    if CHECK.unpack_from(raw, HEADER.size)[0] != _xxh3(raw[: HEADER.size]) or kind not in KINDS:
        raise ChangeLogCorrupt(f"{path}: log header checksum mismatch; the file is damaged")
    return LogHeader(KINDS[kind], epoch, prev, floor, base.rstrip(b"\0").decode("ascii"))


def read_header(path: str | os.PathLike) -> LogHeader:
    with open(path, "rb") as f:
        return parse_header(f.read(HEADER_SIZE), path)


def encode_group(seq: int, entries: Sequence[Entry]) -> bytes:
    """One group's bytes for `entries` [(op, key bytes, value bytes)]."""
    parts = []
    for op, key, value in entries:
        parts.append(ENTRY.pack(op, len(key), len(value)))
        parts.append(key)
        if value:
            parts.append(value)
    payload = b"".join(parts)
    head = GROUP.pack(len(payload), len(entries), seq)
    return head + payload + CHECK.pack(_xxh3(head + payload))


def decode_groups(buf: bytes | memoryview, base_offset: int = 0) -> tuple[list[Group], int]:
    """The whole, valid groups at the start of `buf` and the length they
    cover; whatever follows (a torn or damaged group) is not returned."""
    groups = []
    pos = 0
    n = len(buf)
    mv = memoryview(buf)
    while pos + GROUP.size + CHECK.size <= n:
        length, count, seq = GROUP.unpack_from(buf, pos)
        end = pos + GROUP.size + length + CHECK.size
        if length > MAX_GROUP or end > n:
            break
        body_end = end - CHECK.size
        if _xxh3(mv[pos:body_end]) != CHECK.unpack_from(buf, body_end)[0]:
            break
        entries = []
        p = pos + GROUP.size
        ok = True
        for _ in range(count):
            if p + ENTRY.size > body_end:
                ok = False
                break
            op, klen, vlen = ENTRY.unpack_from(buf, p)
            p += ENTRY.size
            if p + klen + vlen > body_end or op not in (SET, DELETE):
                ok = False
                break
            key = bytes(mv[p : p + klen])
            p += klen
            value = bytes(mv[p : p + vlen])
            p += vlen
            entries.append((op, key, value))
        if not ok or p != body_end:
            break  # a checksummed group that does not parse: written by something else; stop here
        groups.append(Group(seq, entries, base_offset + pos, base_offset + end))
        pos = end
    return groups, pos


def read_groups(fd: int, start: int, end: int, path: str | os.PathLike = "log") -> list[Group]:
    """The groups in [start, end) of an open log, which must all be valid
    (it is the committed part): ChangeLogCorrupt otherwise."""
    if end <= start:
        return []
    buf = os.pread(fd, end - start, start)
    groups, used = decode_groups(buf, start)
    if used != end - start:
        raise ChangeLogCorrupt(
            f"{path}: the committed part [{start}, {end}) fails its checksums at offset {start + used}; "
            "the file was damaged after it was written"
        )
    return groups


def iter_groups(fd: int, start: int, end: int, path: str | os.PathLike = "log", chunk: int = 1 << 20) -> Iterator[list[Group]]:
    """The groups in [start, end) of an open log, as `read_groups` gives them
    but read `chunk` bytes at a time, so that a reader replaying a long log
    never holds all of it, and all of its decoded groups, at once. A group
    longer than `chunk` is read whole. ChangeLogCorrupt, as `read_groups`,
    when the range is not whole valid groups (possibly after some chunks
    were yielded: a caller that applies them must be able to drop them)."""
    pos = start
    chunk = max(chunk, GROUP.size + CHECK.size)  # enough for a group's header
    while pos < end:
        buf = os.pread(fd, min(chunk, end - pos), pos)
        groups, used = decode_groups(buf, pos)
        if not used and len(buf) >= GROUP.size:  # perhaps one group longer than the chunk
            whole = GROUP.size + GROUP.unpack_from(buf, 0)[0] + CHECK.size
            if len(buf) < whole <= end - pos:
                groups, used = decode_groups(os.pread(fd, whole, pos), pos)
        if not used:
            raise ChangeLogCorrupt(
                f"{path}: the committed part [{start}, {end}) fails its checksums at offset {pos}; the file was damaged after it was written"
            )
        yield groups
        pos += used


def scan(path: str | os.PathLike) -> tuple[LogHeader, list[Group], int, int]:
    """(header, valid groups, end of the valid prefix, file size): what recovery keeps."""
    with open(path, "rb") as f:
        data = f.read()
    header = parse_header(data[:HEADER_SIZE], path)
    groups, used = decode_groups(memoryview(data)[HEADER_SIZE:], HEADER_SIZE)
    return header, groups, HEADER_SIZE + used, len(data)


def create_log(root: str | os.PathLike, header: LogHeader, body: bytes = b"") -> Path:
    """Write ROOT/log/<epoch>.log (header, then `body`: whole groups) under a
    temporary name, fsync it, rename it into place, fsync the directory."""
    d = log_dir(root)
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    final = log_path(root, header.epoch)
    tmp = d / f".{header.epoch}.log.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        data = header.pack() + body
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(d)
    return final


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
