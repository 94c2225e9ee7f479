"""Reading a data file of `UUID value` lines: blocks of whole lines, validated
and canonicalised by numpy a block at a time, hashed (xxh3, one call per
record), and handed on as `Records`.

A line the options do not allow stops the build with a DataFormatError naming
the file, line and text; a line they allow to skip is counted and sampled in
the BuildReport, and its number kept (`SkippedLines`) so that messages about
later records can name their input lines.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xxhash

from . import format as fmt
from .errors import DataFormatError, InvalidKey
from .keys import canonical_key
from .options import BuildOptions
from .progress import progress_bar
from .report import SAMPLE, BuildReport, Problem, plural
from .speedups import native

BLOCK = 4 << 20
MAX_LINE = fmt.VALUE_AT + fmt.MAX_VALUE_LEN + 2  # key, space, value, CR, LF

_xxh3 = xxhash.xxh3_64_intdigest
_HEX = np.zeros(256, dtype=bool)
_HEX[list(b"0123456789abcdefABCDEF")] = True
_HYPHEN_COLS = [8, 13, 18, 23]
_KEY_COLS = [c for c in range(fmt.KEY_LEN) if c not in _HYPHEN_COLS]


class Records(NamedTuple):
    """One block's valid lines, canonical: `buf` is their bytes (`key value\\n`
    each), `starts` each record's offset in it, `vlens` each value's length,
    `h64` each key's xxh3_64 and `checks` each record's check (FORMAT.md).
    `lens`, for string-key records (kv/strlines.py: `u16 key length, key,
    value`, back to back), is each record's length; None for UUID records,
    whose length is their value's plus VALUE_AT (and a newline follows)."""

    buf: bytes
    starts: np.ndarray
    vlens: np.ndarray
    h64: np.ndarray
    checks: np.ndarray
    lens: np.ndarray | None = None

    def spans(self) -> np.ndarray:
        """Bytes each record takes in `buf` (a UUID record's newline included)."""
        return self.vlens + (fmt.VALUE_AT + 1) if self.lens is None else self.lens


def read_records(
    data: Path,
    report: BuildReport,
    options: BuildOptions,
    sink: Callable[[Records], None],
    *,
    size: int,
    progress: bool | None,
    block_size: int = BLOCK,
) -> SkippedLines:
    """Hand each block of `data`'s records to `sink`, counting lines in
    `report`; return the numbers of the lines skipped."""
    with open(data, "rb") as f:
        reader = reader_class(options.format)(f, data, report, options, block_size)
        bar = progress_bar(size, progress)
        for records, consumed in reader.blocks():
            sink(records)
            bar(consumed)
        bar(None)
    return reader.skipped_lines


def reader_class(input_format: str) -> type[LineReader]:
    """The reader of an input format: uuid lines here, tsv and jsonl in kv/strlines.py."""
    if input_format == "uuid":
        return LineReader
    from .strlines import JsonlReader, TsvReader

    return {"tsv": TsvReader, "jsonl": JsonlReader}[input_format]


class LineReader:
    """Reads a data file in blocks and yields validated, canonical records."""

    max_line = MAX_LINE  # longer lines are refused before they are all in memory

    def __init__(self, f: io.BufferedIOBase, path: Path, report: BuildReport, options: BuildOptions, block_size: int):
        self.f = f
        self.path = path
        self.report = report
        self.options = options
        self.block_size = block_size
        self.line_base = 0  # lines before the current block
        self.skipped_lines = SkippedLines()

    def blocks(self) -> Iterator[tuple[Records, int]]:
        """Yield the records of each block of whole lines, and the bytes read
        so far. A line longer than any record can be is caught here, before it
        is all in memory, and treated like any other malformed line, whatever
        the block size."""
        carry: list[bytes] = []  # pieces of a line not yet ended, in order
        carried = 0
        discarding = False  # inside an overlong line being skipped
        consumed = 0
        while True:
            chunk = self.f.read(self.block_size)
            if not chunk:
                if carry:  # the last line has no newline: give it one
                    yield self._block(bytearray(b"".join(carry) + b"\n")), consumed
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
                if carried > self.max_line:
                    self._overlong(b"".join(carry)[:80])
                    carry, carried, discarding = [], 0, True
                continue
            buf = bytearray(b"".join(carry)) if carry else bytearray()
            buf += memoryview(chunk)[:cut]
            carry = [chunk[cut:]] if cut < len(chunk) else []
            carried = len(chunk) - cut
            yield self._block(buf), consumed

    def _overlong(self, text: bytes) -> None:
        """The line after the current block is longer than MAX_LINE: stop, or
        skip it (the caller discards its bytes up to the next newline)."""
        line_no = self.line_base + 1
        reason = f"line is longer than {self.max_line:,} bytes, more than any record can hold"
        if not self.options.skip_invalid:
            self._fail(line_no, reason, text)
        if len(self.report.skipped_sample) < SAMPLE:
            self.report.skipped_sample.append(Problem(line_no, reason, show(text)))
        self.report.skipped += 1
        self.report.lines += 1
        self.skipped_lines.add(np.array([line_no], dtype=np.int64))
        self.line_base += 1

    def _fail(self, line: int, reason: str, text: bytes) -> None:
        raise DataFormatError(f"{self.path}:{line}: {reason}: {show(text)}")

    def _block(self, buf: bytearray) -> Records:
        """Validate, canonicalise and hash one block of whole lines."""
        arr = np.frombuffer(buf, dtype=np.uint8)
        starts, ends = _line_bounds(arr)
        self.report.lines += len(starts)
        cr, lens = _cr_flags(arr, ends, ends - starts, self.options)
        arr, windows, head = _key_windows(arr, starts)
        ok = _valid(head, lens)
        bad = np.flatnonzero(~ok)
        cr &= ok  # a malformed line is reported as malformed, CR or not
        self._stop_at_first_problem(buf, starts, ends, lens, cr, bad)
        self._count_skipped(buf, starts, lens, cr, bad)
        self.line_base += len(starts)

        # Canonicalise keys in place: hex letters to lower case (| 0x20 leaves
        # digits unchanged).
        head = head[ok]
        head[:, _KEY_COLS] |= 0x20
        windows[starts[ok]] = head
        del head, windows
        lens = lens[ok]
        if len(bad) or cr.any():  # cr is all False unless stripping
            data, starts = _compact(arr[: len(buf)], ok, cr, starts, ends, lens)
        else:  # the block already is exactly its records
            data, starts = bytes(buf), starts[ok]
        h64, checks = _hash_block(data, starts, lens)
        return Records(data, starts, lens - fmt.VALUE_AT, h64, checks)

    def _stop_at_first_problem(
        self, buf: bytearray, starts: np.ndarray, ends: np.ndarray, lens: np.ndarray, cr: np.ndarray, bad: np.ndarray
    ) -> None:
        """Raise for the first line, in line order, that the options do not allow."""
        n = len(starts)
        first_cr = int(np.argmax(cr)) if not self.options.strip_cr and cr.any() else n
        first_bad = int(bad[0]) if len(bad) and not self.options.skip_invalid else n
        if first_cr < first_bad:
            i = first_cr
            self._fail(
                self.line_base + i + 1,
                f"line ends with CR LF (Windows line endings; {plural(int(cr.sum()), 'such line')} in this block); "
                "pass --strip-cr to remove the CR, or --keep-cr to keep it as the value's last byte",
                bytes(buf[starts[i] : ends[i] + 1]),
            )
        if first_bad < n:
            i = first_bad
            text = bytes(buf[starts[i] : starts[i] + lens[i]])
            self._fail(self.line_base + i + 1, line_problem(text), text)

    def _count_skipped(self, buf: bytearray, starts: np.ndarray, lens: np.ndarray, cr: np.ndarray, bad: np.ndarray) -> None:
        """Count the stripped CRs and the skipped lines, sampling the first lines skipped."""
        self.report.cr_stripped += int(cr.sum())
        if not len(bad):
            return
        first = len(self.report.skipped_sample)
        for i in bad[: max(0, SAMPLE - first)].tolist():
            text = bytes(buf[starts[i] : starts[i] + lens[i]])
            self.report.skipped_sample.append(Problem(self.line_base + i + 1, line_problem(text), show(text)))
        self.report.skipped += len(bad)
        self.skipped_lines.add(bad + self.line_base + 1)


def _line_bounds(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each line's first byte and its '\\n' (a block holds at least one line)."""
    ends = np.flatnonzero(arr == 10)
    starts = np.empty(len(ends), dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


def _cr_flags(arr: np.ndarray, ends: np.ndarray, lens: np.ndarray, options: BuildOptions) -> tuple[np.ndarray, np.ndarray]:
    """Which lines end in CR, and the line lengths without '\\n' (nor the CR,
    when stripping). Keeping it, no line counts as ending in CR."""
    cr = np.zeros(len(ends), dtype=bool)
    nonempty = lens > 0
    cr[nonempty] = arr[ends[nonempty] - 1] == 13
    if options.keep_cr:
        cr[:] = False  # the CR is the value's last byte
    elif options.strip_cr:
        lens = lens - cr
    return cr, lens


def _key_windows(arr: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A strided (writable) view of every 37-byte window of the block, and a
    copy of each line's first 37 bytes (clipped at the block end: lines too
    short to hold a key are rejected anyway). Picking rows of the view is one
    gather. A block shorter than 37 bytes is padded first (a copy)."""
    if len(arr) < fmt.VALUE_AT:
        arr = np.concatenate([arr, np.zeros(fmt.VALUE_AT, dtype=np.uint8)])
    windows = np.lib.stride_tricks.as_strided(arr, shape=(len(arr) - fmt.KEY_LEN, fmt.VALUE_AT), strides=(1, 1), writeable=True)
    head = windows[np.minimum(starts, len(arr) - fmt.VALUE_AT)]
    return arr, windows, head


def _valid(head: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """A 36-character key (hex digits, hyphens at 8, 13, 18, 23), a space, and
    a value of at most MAX_VALUE_LEN bytes."""
    ok = (lens >= fmt.VALUE_AT) & (lens - fmt.VALUE_AT <= fmt.MAX_VALUE_LEN)
    ok &= head[:, fmt.KEY_LEN] == 32
    ok &= (head[:, _HYPHEN_COLS] == 45).all(axis=1)
    ok &= _HEX[head[:, _KEY_COLS]].all(axis=1)
    return ok


def _compact(
    arr: np.ndarray, ok: np.ndarray, cr: np.ndarray, starts: np.ndarray, ends: np.ndarray, lens: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """The block without its skipped lines and stripped CRs, and the records'
    new starts (`lens`: the kept records' lengths)."""
    keep = np.repeat(ok, ends - starts + 1)
    keep[ends[cr] - 1] = False
    kept = arr[keep]
    new_starts = np.empty(len(lens), dtype=np.int64)
    if len(lens):
        new_starts[0] = 0
        np.cumsum(lens[:-1] + 1, out=new_starts[1:])
    return kept.tobytes(), new_starts


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
    checks = np.fromiter(map(_xxh3, map(cut, map(slice, s_list, (starts + lens).tolist()))), dtype=np.uint64, count=len(s_list)).astype(
        np.uint32
    )  # the low 32 bits
    return h64, checks


class SkippedLines:
    """Line numbers of skipped lines, ascending, 8 bytes each (not a list of
    Python ints: a file of mostly bad lines must not cost 36 bytes a line)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._all: np.ndarray | None = None

    def add(self, lines: np.ndarray) -> None:
        if len(lines):
            self._parts.append(lines.astype(np.int64, copy=False))
            self._all = None

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __contains__(self, line: int) -> bool:
        s = self.array()
        i = int(np.searchsorted(s, line))
        return i < len(s) and int(s[i]) == line

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


def key_lines(
    data: Path, wanted: Iterable[tuple[bytes, int]], skipped: SkippedLines, block_size: int = BLOCK
) -> dict[tuple[bytes, int], int]:
    """Input line of the `nth` (0-based) record of each canonical `key` in
    `wanted`, found in one pass over the data file however many are asked:
    a record's line starts with its key (in any case) and a space, and is not
    a skipped line. Used for messages about a shard's duplicates, whose
    records are a subset of the input's."""
    wanted = set(wanted)
    need: dict[bytes, int] = {}
    for key, nth in wanted:
        need[key] = max(need.get(key, 0), nth + 1)
    seen: dict[bytes, list[int]] = {key: [] for key in need}
    for line, key in _lines_starting_with(data, list(need), block_size):
        if line not in skipped:
            seen[key].append(line)
            if all(len(seen[k]) >= need[k] for k in need):
                break
    return {(key, nth): seen[key][nth] for key, nth in wanted if nth < len(seen[key])}


def _lines_starting_with(data: Path, keys: list[bytes], block_size: int) -> Iterator[tuple[int, bytes]]:
    """(line number, key) of each line that starts with one of `keys` (lower
    case) and a space, in file order. Blocks are searched lower-cased, each
    with the last bytes of the one before in front, so no match is cut."""
    patterns = [b"\n" + key + b" " for key in keys]
    overlap = fmt.KEY_LEN + 1  # a pattern's length - 1: a match inside the overlap alone is impossible
    front = b"\n"  # the file's start is a line start; this newline is not the file's
    newlines = -1  # the file's newlines before `block`
    with open(data, "rb") as f:
        while chunk := f.read(block_size):
            block = (front + chunk).lower()
            found = sorted((at, key) for pattern, key in zip(patterns, keys, strict=False) for at in _find_all(block, pattern))
            counted, upto = newlines, 0
            for at, key in found:  # the newline at `at` ends the line before the key's
                counted += block.count(b"\n", upto, at + 1)
                upto = at + 1
                yield counted + 1, key
            front = block[-overlap:]
            newlines += block.count(b"\n", 0, len(block) - len(front))


def _find_all(block: bytes, pattern: bytes) -> Iterator[int]:
    at = block.find(pattern)
    while at >= 0:
        yield at
        at = block.find(pattern, at + 1)


def line_problem(text: bytes) -> str:
    """What is wrong with a malformed line, in words."""
    if not text:
        return "empty line (expected `UUID value`)"
    sp = text.find(b" ")
    if sp < 0:
        return "no space separating key and value"
    key = text[:sp] if sp != fmt.KEY_LEN else text[: fmt.KEY_LEN]
    try:
        if len(key) != fmt.KEY_LEN:
            raise InvalidKey(f"key is {len(key)} characters long; expected a 36-character UUID (8-4-4-4-12)")
        canonical_key(key)
    except InvalidKey as e:
        return str(e)
    if len(text) - fmt.VALUE_AT > fmt.MAX_VALUE_LEN:
        return f"value is {len(text) - fmt.VALUE_AT:,} bytes; the table format holds at most {fmt.MAX_VALUE_LEN:,}"
    return "malformed line"


def show(text: bytes) -> str:
    """A line as messages quote it: escaped, cut at 80 bytes."""
    s = repr(text[:80])[2:-1]
    return s + ("..." if len(text) > 80 else "")


__all__ = ["BLOCK", "MAX_LINE", "LineReader", "Records", "SkippedLines", "key_lines", "line_problem", "read_records", "show"]
