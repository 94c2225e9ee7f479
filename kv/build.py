"""Build a table file from a data file of `UUID value` lines.

One streaming pass reads the input in blocks. numpy validates every line and
canonicalises keys a block at a time; Python only hashes (xxh3 has no
vectorised form). The canonical lines are appended to the records region as
they come, so memory holds 20 bytes per record (hash, ref, check) plus block
buffers. Slots are then placed by sorting on the hash: with a home slot that
grows with the hash, linear probing becomes a running maximum (see
docs/FORMAT.md), computed in numpy.

The writer never exposes a partial file: it writes `.NAME.tmp-PID` in the
target directory, fsyncs, renames, and fsyncs the directory.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from . import __version__
from . import format as fmt
from .errors import DataFormatError, DuplicateKey, InvalidKey
from .keys import canonical_key
from .speedups import native

BLOCK = 4 << 20
MAX_LINE = fmt.VALUE_AT + fmt.MAX_VALUE_LEN + 2  # key, space, value, CR, LF
ON_DUPLICATE = ("error", "first", "last")
SAMPLE = 5  # problems kept for the report

_xxh3 = xxhash.xxh3_64_intdigest
_HEX = np.zeros(256, dtype=bool)
_HEX[list(b"0123456789abcdefABCDEF")] = True
SLOT_TYPE = np.dtype([("hash", "<u4"), ("check", "<u4"), ("ref", "<u8")])
assert SLOT_TYPE.itemsize == fmt.SLOT_SIZE
_HYPHEN_COLS = [8, 13, 18, 23]
_KEY_COLS = [c for c in range(fmt.KEY_LEN) if c not in _HYPHEN_COLS]


@dataclass
class Problem:
    line: int
    reason: str
    text: str


@dataclass
class BuildReport:
    source: str
    table: str
    records: int = 0
    lines: int = 0
    duplicates: int = 0
    skipped: int = 0
    value_bytes: int = 0
    table_bytes: int = 0
    seconds: float = 0.0
    generation: str = ""
    max_displacement: int = 0
    cr_stripped: int = 0
    skipped_sample: list[Problem] = field(default_factory=list)
    duplicate_sample: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"built {self.table} from {self.source}",
            f"  records      {self.records:,}",
            f"  duplicates   {self.duplicates:,}",
            f"  skipped      {self.skipped:,}",
            f"  value bytes  {self.value_bytes:,}",
            f"  table bytes  {self.table_bytes:,}",
            f"  seconds      {self.seconds:.2f}",
            f"  generation   {self.generation}",
        ]
        if self.cr_stripped:
            lines.append(f"  CR stripped  {self.cr_stripped:,} lines")
        for p in self.skipped_sample:
            lines.append(f"  skipped line {p.line}: {p.reason}: {p.text}")
        for p in self.duplicate_sample:
            lines.append(f"  duplicate line {p.line}: {p.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def default_table_path(data: str | os.PathLike) -> Path:
    p = Path(data)
    return p.with_suffix(".kvt") if p.suffix != ".kvt" else p.with_name(p.name + ".kvt")


def build_options(*, skip_invalid: bool = False, on_duplicate: str = "error", strip_cr: bool = False,
                  keep_cr: bool = False, load_factor: float = 0.8) -> dict:
    """The options a table records in its metadata (and `kv serve` compares to reuse one)."""
    return {"skip_invalid": skip_invalid, "on_duplicate": on_duplicate, "strip_cr": strip_cr, "keep_cr": keep_cr,
            "load_factor": load_factor}


def build_table(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    skip_invalid: bool = False,
    on_duplicate: str = "error",
    strip_cr: bool = False,
    keep_cr: bool = False,
    load_factor: float = 0.8,
    progress: bool | None = None,
    block_size: int = BLOCK,
) -> BuildReport:
    """Build the table for `data` at `out` (default: data's name with `.kvt`).

    Raises DataFormatError (or DuplicateKey) naming file, line and text on the
    first problem the options do not allow; nothing is written then.
    """
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate must be one of {ON_DUPLICATE}, not {on_duplicate!r}")
    if not 0.1 <= load_factor <= 0.95:
        raise ValueError(f"load_factor must be between 0.1 and 0.95, not {load_factor}")
    if strip_cr and keep_cr:
        raise ValueError("strip_cr and keep_cr exclude each other")
    t0 = time.perf_counter()
    data = Path(data)
    out = Path(out) if out is not None else default_table_path(data)
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; name the table file to write", str(out))
    st = os.stat(data)
    options = build_options(skip_invalid=skip_invalid, on_duplicate=on_duplicate, strip_cr=strip_cr, keep_cr=keep_cr,
                            load_factor=load_factor)
    report = BuildReport(source=str(data), table=str(out))
    writer = None
    try:
        writer = _TableWriter(out, capacity=st.st_size // (fmt.VALUE_AT + 1) + 1)
        with open(data, "rb") as f:
            reader = _LineReader(f, data, report, options, block_size)
            bar = _progress_bar(st.st_size, progress)
            for buf, starts, vlens, h64, checks, consumed in reader.blocks():
                writer.add(buf, starts, vlens, h64, checks)
                bar(consumed)
            bar(None)
        meta = {
            "format": fmt.VERSION,
            "builder": f"kv {__version__}",
            "source": {"name": data.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
            "built_at": _build_time(st),
            "options": options,
            "lines": report.lines,
            "skipped": report.skipped,
            "duplicates": 0,
        }
        writer.finish(meta, report, data, reader.skipped_lines, on_duplicate, load_factor)
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if isinstance(e, OSError) and e.filename is None and e.errno in _WRITE_ERRNOS:
            # Only writes fail so; name the table, not the input.
            raise OSError(e.errno, f"{e.strerror} (writing the table; nothing was left under that name)", str(out)) from e
        raise
    report.seconds = time.perf_counter() - t0
    return report


def _build_time(st: os.stat_result) -> str:
    """The build timestamp, kept reproducible: SOURCE_DATE_EPOCH when set (the
    reproducible-builds.org convention), else the source file's mtime."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = int(epoch) if epoch and epoch.isdigit() else st.st_mtime_ns // 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _progress_bar(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return lambda consumed: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="building", file=sys.stderr)
    done = [0]

    def update(consumed):
        if consumed is None:
            bar.close()
            return
        bar.update(consumed - done[0])
        done[0] = consumed

    return update


class _LineReader:
    """Reads a data file in blocks and yields validated, canonical records."""

    def __init__(self, f: io.BufferedReader, path: Path, report: BuildReport, options: dict, block_size: int):
        self.f = f
        self.path = path
        self.report = report
        self.skip_invalid = options["skip_invalid"]
        self.strip_cr = options["strip_cr"]
        self.keep_cr = options["keep_cr"]
        self.block_size = block_size
        self.line_base = 0  # lines before the current block
        self.skipped_lines = SkippedLines()

    def blocks(self):
        """Yield the records of each block of whole lines. A line longer than
        any record can be is caught here, before it is all in memory, and
        treated like any other malformed line, whatever the block size."""
        carry: list[bytes] = []  # pieces of a line not yet ended, in order
        carried = 0
        discarding = False  # inside an overlong line being skipped
        consumed = 0
        while True:
            chunk = self.f.read(self.block_size)
            if not chunk:
                if carry:
                    yield self._block(bytearray(b"".join(carry) + b"\n"), consumed, final_newline_added=True)
                return
            consumed += len(chunk)
            if discarding:
                nl = chunk.find(b"\n")
                if nl < 0:
                    continue
                chunk = chunk[nl + 1 :]
                discarding = False
                if not chunk:
                    continue
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                carry.append(chunk)
                carried += len(chunk)
                if carried > MAX_LINE:
                    self._overlong(b"".join(carry)[:80])
                    carry, carried, discarding = [], 0, True
                continue
            buf = bytearray(b"".join(carry)) if carry else bytearray()
            buf += memoryview(chunk)[:cut]
            carry = [chunk[cut:]] if cut < len(chunk) else []
            carried = len(chunk) - cut
            yield self._block(buf, consumed)

    def _overlong(self, text: bytes):
        """The line after the current block is longer than MAX_LINE: stop, or
        skip it (the caller discards its bytes up to the next newline)."""
        line_no = self.line_base + 1
        reason = f"line is longer than {MAX_LINE:,} bytes; a value holds at most {fmt.MAX_VALUE_LEN:,} bytes"
        if not self.skip_invalid:
            self._fail(line_no, reason, text)
        if len(self.report.skipped_sample) < SAMPLE:
            self.report.skipped_sample.append(Problem(line_no, reason, _show(text)))
        self.report.skipped += 1
        self.report.lines += 1
        self.skipped_lines.add(np.array([line_no], dtype=np.int64))
        self.line_base += 1

    def _fail(self, line: int, reason: str, text: bytes):
        raise DataFormatError(f"{self.path}:{line}: {reason}: {_show(text)}")

    def _block(self, buf: bytearray, consumed: int, final_newline_added: bool = False):
        arr = np.frombuffer(buf, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)  # index of each line's '\n'
        n = len(ends)
        starts = np.empty(n, dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lens = ends - starts  # without '\n'
        self.report.lines += n

        cr = np.zeros(n, dtype=bool)
        nonempty = lens > 0
        cr[nonempty] = arr[ends[nonempty] - 1] == 13
        if self.keep_cr:
            cr[:] = False  # the CR is the value's last byte
        elif self.strip_cr:
            lens = lens - cr

        # Validate: 36-char key, space, value of at most MAX_VALUE_LEN bytes.
        # One gather takes each line's first 37 bytes (clipped at the block end).
        ok = (lens >= fmt.VALUE_AT) & (lens - fmt.VALUE_AT <= fmt.MAX_VALUE_LEN)
        # A strided view of every 37-byte window; picking rows is one gather of
        # 37-byte rows (lines too short to hold a key are rejected by `ok`).
        if len(arr) < fmt.VALUE_AT:
            arr = np.concatenate([arr, np.zeros(fmt.VALUE_AT, dtype=np.uint8)])
        windows = np.lib.stride_tricks.as_strided(
            arr, shape=(len(arr) - fmt.KEY_LEN, fmt.VALUE_AT), strides=(1, 1), writeable=True
        )
        head_rows = np.minimum(starts, len(arr) - fmt.VALUE_AT)
        head = windows[head_rows]
        ok &= head[:, fmt.KEY_LEN] == 32
        ok &= (head[:, _HYPHEN_COLS] == 45).all(axis=1)
        ok &= _HEX[head[:, _KEY_COLS]].all(axis=1)
        bad = np.flatnonzero(~ok)
        cr &= ok  # a malformed line is reported as malformed, CR or not
        # Stop at the first problem the options do not allow, in line order.
        first_cr = int(np.argmax(cr)) if not self.strip_cr and cr.any() else n
        first_bad = int(bad[0]) if len(bad) and not self.skip_invalid else n
        if first_cr < first_bad:
            i = first_cr
            self._fail(
                self.line_base + i + 1,
                f"line ends with CR LF (Windows line endings; {int(cr.sum()):,} such lines in this block); "
                "pass --strip-cr to remove the CR, or --keep-cr to keep it as the value's last byte",
                bytes(buf[starts[i] : ends[i] + 1]),
            )
        if first_bad < n:
            i = first_bad
            text = bytes(buf[starts[i] : starts[i] + lens[i]])
            self._fail(self.line_base + i + 1, _line_problem(text), text)
        self.report.cr_stripped += int(cr.sum())
        if len(bad):
            first = len(self.report.skipped_sample)
            for i in bad[: max(0, SAMPLE - first)].tolist():
                text = bytes(buf[starts[i] : starts[i] + lens[i]])
                self.report.skipped_sample.append(Problem(self.line_base + i + 1, _line_problem(text), _show(text)))
            self.report.skipped += len(bad)
            self.skipped_lines.add(bad + self.line_base + 1)
        self.line_base += n

        # Canonicalise keys in place: hex letters to lower case (| 0x20 leaves
        # digits unchanged).
        good = starts[ok]
        head = head[ok]
        head[:, _KEY_COLS] |= 0x20
        windows[good] = head
        del head, windows
        arr = arr[: len(buf)]

        # Compact to exactly the kept records (each `key value\n`) when lines
        # were dropped or CRs stripped; otherwise the block already is that.
        lens = lens[ok]
        if len(bad) or cr.any():  # cr is all False unless stripping
            rec_len = lens + 1
            keep = np.repeat(ok, (ends - starts + 1))
            keep[ends[cr] - 1] = False
            arr = arr[keep]
            new_starts = np.empty(len(lens), dtype=np.int64)
            if len(lens):
                new_starts[0] = 0
                np.cumsum(rec_len[:-1], out=new_starts[1:])
            good = new_starts
            buf = arr.tobytes()
        else:
            buf = bytes(buf)
        vlens = lens - fmt.VALUE_AT
        h64, checks = _hash_block(buf, good, lens)
        return buf, good, vlens, h64, checks, consumed


def _hash_block(buf: bytes, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xxh3_64 of each record's key (its first 36 bytes) and the low 32 bits
    of xxh3_64 of each whole record (key, space, value), for one block."""
    c = native()
    if c is not None:  # one C loop per block, without the GIL
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        h64 = np.empty(len(starts), dtype=np.uint64)
        whole = np.empty(len(starts), dtype=np.uint64)
        c.hash_spans(buf, starts, starts + 36, h64)
        c.hash_spans(buf, starts, starts + lens, whole)
        return h64, whole.astype(np.uint32)
    # map() chains of C functions: no Python frame per record.
    s_list = starts.tolist()
    cut = buf.__getitem__
    h64 = np.fromiter(map(_xxh3, map(cut, map(slice, s_list, (starts + 36).tolist()))), dtype=np.uint64, count=len(s_list))
    checks = np.fromiter(map(_xxh3, map(cut, map(slice, s_list, (starts + lens).tolist()))), dtype=np.uint64,
                         count=len(s_list)).astype(np.uint32)  # the low 32 bits
    return h64, checks


class SkippedLines:
    """Line numbers of skipped lines, ascending, 8 bytes each (not a list of
    Python ints: a file of mostly bad lines must not cost 36 bytes a line)."""

    def __init__(self):
        self._parts: list[np.ndarray] = []
        self._all: np.ndarray | None = None

    def add(self, lines: np.ndarray):
        if len(lines):
            self._parts.append(lines.astype(np.int64, copy=False))
            self._all = None

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def array(self) -> np.ndarray:
        if self._all is None:
            self._all = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.int64)
        return self._all

    def line_of_record(self, ordinal: int) -> int:
        """Input line of the record with this 0-based ordinal among kept lines:
        skipped line s[j] comes before it when s[j] - j <= ordinal + 1."""
        s = self.array()
        skipped_before = int(np.searchsorted(s - np.arange(len(s)), ordinal + 1, side="right"))
        return ordinal + 1 + skipped_before


def _line_problem(text: bytes) -> str:
    if not text:
        return "empty line (expected `UUID value`)"
    sp = text.find(b" ")
    if sp < 0:
        return "no space separating key and value"
    if sp != fmt.KEY_LEN:
        key = text[:sp]
    else:
        key = text[: fmt.KEY_LEN]
    try:
        if len(key) != fmt.KEY_LEN:
            raise InvalidKey(f"key is {len(key)} characters long; expected a 36-character UUID (8-4-4-4-12)")
        canonical_key(key)
    except InvalidKey as e:
        return str(e)
    if len(text) - fmt.VALUE_AT > fmt.MAX_VALUE_LEN:
        return f"value is {len(text) - fmt.VALUE_AT:,} bytes; the table format holds at most {fmt.MAX_VALUE_LEN:,}"
    return "malformed line"


def _show(text: bytes) -> str:
    s = repr(text[:80])[2:-1]
    return s + ("..." if len(text) > 80 else "")


def _remove_orphans(out: Path) -> None:
    """Delete temporary files a killed build (SIGKILL, power loss) left for
    `out`: `.NAME.tmp-PID` whose process no longer runs. A live build's file,
    even another process's, is left alone."""
    prefix = f".{out.name}.tmp-"
    try:
        names = [n for n in os.listdir(out.parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):]
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


class _TableWriter:
    """Appends records to a temporary file, then places slots and renames."""

    def __init__(self, out: Path, capacity: int, shard: tuple[int, int] = (0, 1)):
        self.out = out
        self.shard = shard
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(out)
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        self.f = open(self.tmp, "wb+")
        self.f.write(bytes(fmt.HEADER_SIZE))
        self.content = xxhash.xxh3_64()
        self.pos = fmt.HEADER_SIZE
        # Upper bounds, allocated lazily by the OS: only touched pages cost memory.
        self.h64 = np.empty(capacity, dtype=np.uint64)
        self.refs = np.empty(capacity, dtype=np.uint64)
        self.checks = np.empty(capacity, dtype=np.uint32)
        self.n = 0
        self.value_bytes = 0
        self.line_of = self._line_of  # input line of a record, for messages

    def add(self, buf: bytes, starts: np.ndarray, vlens: np.ndarray, h64: np.ndarray, checks: np.ndarray):
        k = len(starts)
        if not k:
            return
        if self.n + k > len(self.h64):  # only when the capacity guess was low
            grow = max(self.n + k, len(self.h64) * 3 // 2)
            for name in ("h64", "refs", "checks"):
                old = getattr(self, name)
                new = np.empty(grow, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        if self.pos + len(buf) > fmt.MAX_RECORDS_SIZE:
            raise DataFormatError(f"records exceed the format's {fmt.MAX_RECORDS_SIZE:,}-byte limit; build shards instead")
        a, b = self.n, self.n + k
        self.h64[a:b] = h64
        self.refs[a:b] = ((starts.astype(np.uint64) + np.uint64(self.pos)) << np.uint64(fmt.LEN_BITS)) | (vlens + fmt.VALUE_AT).astype(np.uint64)
        self.checks[a:b] = checks
        self.n = b
        self.value_bytes += int(vlens.sum())
        self.f.write(buf)
        self.content.update(buf)
        self.pos += len(buf)

    def _write(self, data):
        data = memoryview(data).cast("B")
        self.f.write(data)
        self.content.update(data)
        self.pos += len(data)

    def _pad(self):
        pad = fmt.align(self.pos) - self.pos
        if pad:
            self._write(bytes(pad))

    def finish(self, meta: dict, report: BuildReport, source: Path, skipped_lines: "SkippedLines", on_duplicate: str, load_factor: float):
        n = self.n
        h64, refs, checks = self.h64[:n], self.refs[:n], self.checks[:n]
        self.h64 = self.refs = self.checks = None
        # By hash, equal keys in input order (duplicates resolve by it): refs
        # grow with input position, so that is the order of (hash, ref).
        c = native()
        if c is not None:  # in place and in linear time: no index array, no copies
            c.sort_records(h64, refs, checks)
        else:
            order = np.argsort(h64, kind="stable")
            h64 = h64[order]
            refs = refs[order]
            checks = checks[order]
            del order
        keep = self._resolve_duplicates(h64, refs, report, source, skipped_lines, on_duplicate)
        if keep is not None:
            h64, refs, checks = h64[keep], refs[keep], checks[keep]
            n = len(h64)
        meta["duplicates"] = report.duplicates
        h64 >>= np.uint64(32)
        h32 = h64.astype(np.uint32)
        del h64
        home_slots = max(1, math.ceil(n / load_factor)) if n else 1
        if home_slots >= 1 << 31:
            raise DataFormatError(f"{n:,} records is more than one table holds (about 1.7 billion); build shards (--shards)")
        # Home slots, then final positions pos[i] = max(home[i], pos[i-1] + 1)
        # = i + running max of (home - i), in place (8 bytes a record).
        pos = h32.astype(np.int64)
        pos *= home_slots
        pos >>= 32
        if n:
            carry = np.iinfo(np.int64).min
            for a in range(0, n, 1 << 20):  # chunked: no second full-size array
                chunk = pos[a : a + (1 << 20)]
                steps = np.arange(a, a + len(chunk), dtype=np.int64)
                chunk -= steps
                chunk[0] = max(int(chunk[0]), carry)
                np.maximum.accumulate(chunk, out=chunk)
                carry = int(chunk[-1])
                chunk += steps
            del steps
            max_disp = 0
            for a in range(0, n, 1 << 20):  # chunked: no second full-size array
                home = (h32[a : a + (1 << 20)].astype(np.int64) * home_slots) >> 32
                max_disp = max(max_disp, int((pos[a : a + (1 << 20)] - home).max()))
            used = max(home_slots, int(pos[-1]) + 1)
        else:
            max_disp = 0
            used = home_slots
        # Padding: a lookup searches max_disp + 1 slots from its home slot.
        slot_count = used + max(fmt.WINDOW, max_disp + 1)

        self._pad()
        records_size = self.pos - fmt.HEADER_SIZE
        slots_offset = self.pos
        step = 1 << 20
        for a in range(0, slot_count, step):
            b = min(a + step, slot_count)
            block = np.zeros(b - a, dtype=SLOT_TYPE)
            # An empty slot holds the smallest hash whose home is that slot (past
            # the home slots: the largest hash), so hashes stay sorted.
            slots = np.arange(a, b, dtype=np.uint64)
            inside = slots < np.uint64(home_slots)
            block["hash"][~inside] = fmt.EMPTY_TAIL_HASH
            block["hash"][inside] = ((slots[inside] << np.uint64(32)) + np.uint64(home_slots - 1)) // np.uint64(home_slots)
            i, j = np.searchsorted(pos, [a, b])
            at = pos[i:j] - a
            block["hash"][at] = h32[i:j]
            block["check"][at] = checks[i:j]
            block["ref"][at] = refs[i:j]
            self._write(block)
        self._pad()
        meta_offset = self.pos
        meta.update(
            records=n,
            value_bytes=self.value_bytes_of(refs),
            load_factor=round(n / home_slots, 4) if n else 0.0,
            max_displacement=max_disp,
        )
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        self._write(meta_bytes)
        file_size = self.pos
        header = fmt.Header(
            magic=fmt.MAGIC,
            version=fmt.VERSION,
            header_size=fmt.HEADER_SIZE,
            record_count=n,
            value_bytes=meta["value_bytes"],
            home_slots=home_slots,
            slot_count=slot_count,
            max_displacement=max_disp,
            records_offset=fmt.HEADER_SIZE,
            records_size=records_size,
            slots_offset=slots_offset,
            meta_offset=meta_offset,
            meta_size=len(meta_bytes),
            file_size=file_size,
            content_checksum=self.content.intdigest(),
            shard_index=self.shard[0],
            shard_count=self.shard[1],
            header_checksum=0,
        )
        packed = header.pack()
        packed = packed[: fmt.HEADER_CHECKSUM_AT] + _xxh3(packed[: fmt.HEADER_CHECKSUM_AT]).to_bytes(8, "little")
        self.f.seek(0)
        self.f.write(packed)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.out)
        _fsync_dir(self.out.parent)
        report.records = n
        report.value_bytes = meta["value_bytes"]
        report.table_bytes = file_size
        report.generation = fmt.generation_id(header.content_checksum)
        report.max_displacement = max_disp

    @staticmethod
    def value_bytes_of(refs: np.ndarray) -> int:
        total, mask, step = 0, np.uint64(fmt.LEN_MASK), 1 << 20
        for a in range(0, len(refs), step):  # chunked: no full-size temporary at the memory peak
            total += int((refs[a : a + step] & mask).sum(dtype=np.uint64))
        return total - fmt.VALUE_AT * len(refs)

    def _resolve_duplicates(self, h64, refs, report, source, skipped_lines, on_duplicate):
        """Find equal keys among equal hashes; return the rows to keep, or None."""
        same = np.flatnonzero(h64[1:] == h64[:-1])
        if not len(same):
            return None
        self.f.flush()
        drop = []
        keys = {}

        def key_at(i):
            off = int(refs[i]) >> fmt.LEN_BITS
            self.f.seek(off)
            return self.f.read(fmt.KEY_LEN)

        # Walk runs of equal hashes; inside a run, group rows by actual key.
        i = 0
        runs = []
        for s in same.tolist():
            if runs and runs[-1][1] == s:
                runs[-1][1] = s + 1
            else:
                runs.append([s, s + 1])
        earliest = None  # under "error": the repeat that comes first in the file
        for a, b in runs:
            keys.clear()
            for row in range(a, b + 1):
                keys.setdefault(key_at(row), []).append(row)
            for key, rows in keys.items():
                if len(rows) < 2:
                    continue
                if on_duplicate == "error":
                    # refs grow with input order: the smallest second ref is the first repeat
                    if earliest is None or refs[rows[1]] < refs[earliest[2]]:
                        earliest = (key, rows[0], rows[1])
                    continue
                kept = rows[0] if on_duplicate == "first" else rows[-1]
                for r in rows:
                    if r != kept:
                        drop.append(r)
                        report.duplicates += 1
                        if len(report.duplicate_sample) < SAMPLE:
                            line = self.line_of(int(refs[r]), skipped_lines)
                            kline = self.line_of(int(refs[kept]), skipped_lines)
                            report.duplicate_sample.append(
                                Problem(line, f"key {key.decode()} also on line {kline}; kept line {kline} ({on_duplicate})", "")
                            )
        if earliest is not None:
            key, r1, r2 = earliest
            first, second = (self.line_of(int(refs[r]), skipped_lines) for r in (r1, r2))
            raise DuplicateKey(
                f"{source}:{second}: key {key.decode()} already appeared on line {first}; "
                "pass --on-duplicate=first or --on-duplicate=last to choose which value to keep"
            )
        self.f.seek(0, os.SEEK_END)
        if not drop:
            return None
        keep = np.ones(len(h64), dtype=bool)
        keep[drop] = False
        return keep

    def _line_of(self, ref: int, skipped_lines: "SkippedLines") -> int:
        """Input line number of the record at `ref`: its ordinal among records
        (newlines before it in the records region) plus skipped lines before it."""
        off = ref >> fmt.LEN_BITS
        self.f.flush()
        ordinal = 0
        with open(self.tmp, "rb") as r:
            r.seek(fmt.HEADER_SIZE)
            left = off - fmt.HEADER_SIZE
            while left > 0:
                chunk = r.read(min(left, 1 << 20))
                ordinal += chunk.count(b"\n")
                left -= len(chunk)
        return skipped_lines.line_of_record(ordinal)

    def abort(self):
        try:
            self.f.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_sigterm_cleanup():
    """Turn SIGTERM into SystemExit so a killed build removes its temp file."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
