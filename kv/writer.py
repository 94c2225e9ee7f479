"""Writing a table file: records appended as they come, then slots, metadata
and header (docs/FORMAT.md).

The writer never exposes a partial file: it writes `.NAME.tmp-PID` in the
target directory, fsyncs, renames, and fsyncs the directory. Memory holds 20
bytes per record (hash, ref, check) until the slots are placed.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import xxhash

from . import format as fmt
from .duplicates import Occurrence, resolve_duplicates
from .errors import DataFormatError
from .lines import Records, SkippedLines
from .options import BuildOptions
from .placement import Layout, place, record_refs, slot_blocks, sort_by_hash, to_hash32, value_bytes_of
from .report import BuildReport


class TableWriter:
    """Appends records to a temporary file, then places slots and renames."""

    def __init__(self, out: Path, capacity: int, shard: tuple[int, int] = (0, 1), key_kind: str = "uuid") -> None:
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory; name the table file to write", str(out))
        self.out = out
        self.shard = shard
        self.version = fmt.KIND_VERSION[key_kind]
        self.value_bytes = 0  # string records: summed as they come (their key lengths vary)
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(out)
        self.tmp = temp_path(out)
        self.f = open(self.tmp, "wb+")
        try:  # from here on the file exists: a failure or a signal (SIGTERM raises) removes it
            self.f.write(bytes(fmt.HEADER_SIZE))
            self.content = xxhash.xxh3_64()
            self.pos = fmt.HEADER_SIZE
            # Upper bounds, allocated lazily by the OS: only touched pages cost memory.
            self.h64: np.ndarray = np.empty(capacity, dtype=np.uint64)
            self.refs: np.ndarray = np.empty(capacity, dtype=np.uint64)
            self.checks: np.ndarray = np.empty(capacity, dtype=np.uint32)
        except BaseException:
            self.abort()
            raise
        self.n = 0
        self._all_refs: np.ndarray | None = None  # set while finish() resolves duplicates

    def add(self, records: Records) -> None:
        """Append one block's records."""
        buf, starts, vlens, h64, checks, lens = records
        k = len(starts)
        if not k:
            return
        if self.n + k > len(self.h64):  # only when the capacity guess was low
            self._grow(max(self.n + k, len(self.h64) * 3 // 2))
        if self.pos + len(buf) > fmt.MAX_RECORDS_SIZE:
            raise DataFormatError(f"records exceed the format's {fmt.MAX_RECORDS_SIZE:,}-byte limit; build shards instead")
        a, b = self.n, self.n + k
        self.h64[a:b] = h64
        self.refs[a:b] = record_refs(starts, self.pos, vlens + fmt.VALUE_AT if lens is None else lens)
        self.value_bytes += int(vlens.sum())
        self.checks[a:b] = checks
        self.n = b
        self.f.write(buf)
        self.content.update(buf)
        self.pos += len(buf)

    def _grow(self, size: int) -> None:
        for name in ("h64", "refs", "checks"):
            old = getattr(self, name)
            new = np.empty(size, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def finish(self, meta: dict, report: BuildReport, source: Path, skipped: SkippedLines, options: BuildOptions) -> None:
        """Place the slots, write them, the metadata (`meta` plus the counts)
        and the header, and rename the file into place."""
        columns = [self.h64[: self.n], self.refs[: self.n], self.checks[: self.n]]
        del self.h64, self.refs, self.checks  # the list holds the only references
        sort_by_hash(columns)
        h64, refs, checks = columns
        del columns
        self._all_refs = refs  # every record's, for lines_of (string records)
        keep = self._resolve_duplicates(h64, refs, report, source, skipped, options.on_duplicate)
        self._all_refs = None
        if keep is not None:
            self.value_bytes -= self._value_bytes_at(refs[~keep])
            h64, refs, checks = h64[keep], refs[keep], checks[keep]
        h32 = to_hash32(h64)
        del h64, keep
        layout = place(h32, options.table_load_factor)
        records_size = self._pad() - fmt.HEADER_SIZE
        slots_offset = self.pos
        for block in slot_blocks(h32, checks, refs, layout):
            self._write(block)
        self._pad()
        vbytes = value_bytes_of(refs) if self.version == fmt.VERSION_UUID else self.value_bytes
        meta.update(
            duplicates=report.duplicates,
            records=len(h32),
            value_bytes=vbytes,
            load_factor=layout.load_factor,
            max_displacement=layout.max_displacement,
        )
        del h32, refs, checks
        header = self._write_meta(meta, layout, records_size, slots_offset)
        self._commit(header_bytes(header))
        report.records = header.record_count
        report.value_bytes = header.value_bytes
        report.table_bytes = header.file_size
        report.generation = fmt.generation_id(header.content_checksum)
        report.max_displacement = header.max_displacement

    def _write(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        # ignore: numpy declares ndarray.__buffer__ only for Python >= 3.12 (python_version is 3.11); ndarray is a buffer
        data = memoryview(data).cast("B")  # type: ignore[arg-type]
        self.f.write(data)
        self.content.update(data)
        self.pos += len(data)

    def _pad(self) -> int:
        """Zeros up to the next page boundary; return the new position."""
        pad = fmt.align(self.pos) - self.pos
        if pad:
            self._write(bytes(pad))
        return self.pos

    def _write_meta(self, meta: dict, layout: Layout, records_size: int, slots_offset: int) -> fmt.Header:
        """Write the metadata; return the header that describes the file."""
        meta_offset = self.pos
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        self._write(meta_bytes)
        return fmt.Header(
            magic=fmt.MAGIC,
            version=self.version,
            header_size=fmt.HEADER_SIZE,
            record_count=meta["records"],
            value_bytes=meta["value_bytes"],
            home_slots=layout.home_slots,
            slot_count=layout.slot_count,
            max_displacement=layout.max_displacement,
            records_offset=fmt.HEADER_SIZE,
            records_size=records_size,
            slots_offset=slots_offset,
            meta_offset=meta_offset,
            meta_size=len(meta_bytes),
            file_size=self.pos,
            content_checksum=self.content.intdigest(),
            shard_index=self.shard[0],
            shard_count=self.shard[1],
            header_checksum=0,
        )

    def _commit(self, header: bytes) -> None:
        """Write the header, make the file durable and rename it into place."""
        self.f.seek(0)
        self.f.write(header)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.out)
        fsync_dir(self.out.parent)

    def _resolve_duplicates(
        self, h64: np.ndarray, refs: np.ndarray, report: BuildReport, source: Path, skipped: SkippedLines, policy: str
    ) -> np.ndarray | None:
        self.f.flush()

        def key_at(row: int) -> bytes:
            self.f.seek(int(refs[row]) >> fmt.LEN_BITS)
            if self.version == fmt.VERSION_UUID:
                return self.f.read(fmt.KEY_LEN)
            return self.f.read(int.from_bytes(self.f.read(2), "little"))

        keep = resolve_duplicates(h64, refs, policy, key_at, lambda found: self.lines_of(found, skipped), source, report)
        self.f.seek(0, os.SEEK_END)
        return keep

    def _value_bytes_at(self, refs: np.ndarray) -> int:
        """Value bytes of the records at `refs` (string records: read their key lengths)."""
        if self.version == fmt.VERSION_UUID:
            return value_bytes_of(refs)
        self.f.flush()
        total = 0
        for ref in refs.tolist():
            self.f.seek(ref >> fmt.LEN_BITS)
            total += (ref & fmt.LEN_MASK) - 2 - int.from_bytes(self.f.read(2), "little")
        self.f.seek(0, os.SEEK_END)
        return total

    def lines_of(self, found: list[Occurrence], skipped: SkippedLines) -> list[int]:
        """Input line of each record: its ordinal among records plus the
        skipped lines before it. A UUID record's ordinal is the newlines
        before it in the records region (one pass, however many are asked);
        a string record's (values may hold newlines), the number of records
        before it: refs grow with input order."""
        if self.version != fmt.VERSION_UUID:
            refs = self._all_refs
            assert refs is not None, "lines_of is called from finish()"
            return [skipped.line_of_record(int(np.count_nonzero(refs < o.ref))) for o in found]
        self.f.flush()
        ordinals: dict[int, int] = {}
        newlines, pos = 0, fmt.HEADER_SIZE
        with open(self.tmp, "rb") as r:
            r.seek(pos)
            for off in sorted({o.ref >> fmt.LEN_BITS for o in found}):
                while pos < off:
                    chunk = r.read(min(off - pos, 1 << 20))
                    if not chunk:
                        break
                    newlines += chunk.count(b"\n")
                    pos += len(chunk)
                ordinals[off] = newlines
        return [skipped.line_of_record(ordinals[o.ref >> fmt.LEN_BITS]) for o in found]

    def abort(self) -> None:
        """Close and delete the temporary file (nothing is renamed)."""
        try:
            self.f.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def temp_path(out: Path) -> Path:
    """Where a build writes `out` until it is complete: `.NAME.tmp-PID` beside it."""
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def discard_temp(out: Path) -> None:
    """Remove the temporary file of a writer for `out` that was stopped while
    being made (so none holds it), if there is one; on the way out of a
    failure, so nothing here may hide that failure."""
    try:
        temp_path(out).unlink()
    except OSError:
        pass  # none (the usual case), or not a file we made


def header_bytes(header: fmt.Header) -> bytes:
    """The packed header with its checksum (of the bytes before it) filled in."""
    packed = header.pack()[: fmt.HEADER_CHECKSUM_AT]
    return packed + xxhash.xxh3_64_intdigest(packed).to_bytes(8, "little")


def remove_orphans(out: Path) -> None:
    """Delete temporary files a killed build (SIGKILL, power loss) left for
    `out`: `.NAME.tmp-PID` whose process no longer runs. A live build's file,
    even another process's, is left alone."""
    prefix = f".{out.name}.tmp-"
    try:
        names = [n for n in os.listdir(out.parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or not ours to signal): keep its file
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(out.parent / name)
        except OSError:
            pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
