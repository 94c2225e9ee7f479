"""Reading data files of string keys (format version 2 tables):

- `tsv`: `key<TAB>value` lines. The key is the bytes before the first TAB
  (UTF-8, no LF), the value the rest of the line up to `\\n` (may be empty,
  may hold more TABs). Validated by numpy a block at a time, like UUID lines.
- `jsonl`: one JSON object a line, `{"key": str, "value": str}` or
  `{"key": str, "value_base64": str}` (values may then hold any bytes,
  newlines included). Parsed by the json module, one call a line.

Each record becomes `u16 key length, key, value` (docs/FORMAT.md, version 2).
A key is a non-empty UTF-8 string of at most 1,024 bytes. A line that breaks
the rules stops the build naming file, line and the problem, or is skipped
and reported under --skip-invalid, exactly as for UUID lines (kv/lines.py,
whose block reading, CR handling and skipped-line accounting this reuses).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

import numpy as np

from . import format as fmt
from .lines import LineReader, Records, _cr_flags, _line_bounds, show
from .report import SAMPLE, Problem
from .speedups import native

MAX_KEY = fmt.MAX_STRING_KEY
MAX_RECORD = fmt.MAX_STRING_RECORD  # 2 + key + value
TSV_MAX_LINE = MAX_RECORD + 2  # key, TAB, value, CR, LF (the 2 length bytes are not in the line)
JSONL_MAX_LINE = 8 * MAX_RECORD  # JSON escapes and base64 make a line longer than its record

FORMATS = ("uuid", "tsv", "jsonl")
SUFFIXES = {".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def detect_format(path: str | os.PathLike) -> str:
    """The input format a file name implies: .tsv, .jsonl (or .ndjson); else uuid."""
    from pathlib import Path

    return SUFFIXES.get(Path(path).suffix.lower(), "uuid")


class StringReader(LineReader):
    """Common part: turning (key, value) spans into version-2 records."""

    max_line = TSV_MAX_LINE

    def _problem(self, line_index: int, reason: str, text: bytes, problems: list) -> None:
        """Stop on a malformed line, or note it for skipping."""
        line_no = self.line_base + line_index + 1
        if not self.options.skip_invalid:
            self._fail(line_no, reason, text)
        problems.append((line_index, reason, text))

    def _record_skips(self, problems: list) -> None:
        if not problems:
            return
        room = max(0, SAMPLE - len(self.report.skipped_sample))
        for i, reason, text in problems[:room]:
            self.report.skipped_sample.append(Problem(self.line_base + i + 1, reason, show(text)))
        self.report.skipped += len(problems)
        self.skipped_lines.add(np.array([i for i, _, _ in problems], dtype=np.int64) + self.line_base + 1)


def key_problem(key: bytes) -> str | None:
    """Why `key` is not a string key (None: it is one)."""
    if not key:
        return "empty key; a key is 1 to 1,024 bytes of UTF-8"
    if len(key) > MAX_KEY:
        return f"key is {len(key):,} bytes; the limit is {MAX_KEY:,}"
    if not key.isascii():
        try:
            key.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"key is not valid UTF-8 (byte {e.start + 1})"
    return None


class TsvReader(StringReader):
    """`key<TAB>value` lines."""

    def _block(self, buf: bytearray) -> Records:
        c = native()
        if c is not None:
            fast = self._block_c(c, buf)
            if fast is not None:
                return fast
        arr = np.frombuffer(buf, dtype=np.uint8)
        starts, ends = _line_bounds(arr)
        n = len(starts)
        self.report.lines += n
        cr, lens = _cr_flags(arr, ends, ends - starts, self.options)
        tabs = np.flatnonzero(arr == 9)
        if len(tabs):  # each line's first TAB: the first at or after its start, if before its end
            at = np.searchsorted(tabs, starts)
            tab = np.where(at < len(tabs), tabs[np.minimum(at, len(tabs) - 1)], ends)
        else:
            tab = ends.copy()
        has_tab = tab < starts + lens
        klen = tab - starts
        vlen = lens - klen - 1
        ok = has_tab & (klen >= 1) & (klen <= MAX_KEY) & (klen + vlen + 2 <= MAX_RECORD)
        ok &= self._utf8_keys(arr, starts, klen, ok)
        self._check_lines(buf, starts, lens, has_tab, klen, vlen, ok, cr)
        # The record bytes: the line without its TAB, CR (when stripped) and LF,
        # with the key length in front.
        keep_line = np.repeat(ok, ends - starts + 1)
        if len(buf):
            drop = tab[ok]
            keep_line[drop[drop < len(keep_line)]] = False
        records, rstarts, klen_ok, vlen_ok = _assemble(arr[: len(buf)], keep_line, ok, cr, starts, ends, klen, vlen)
        self.line_base += n
        return _hashed(records, rstarts, klen_ok, vlen_ok)

    def _block_c(self, c: Any, buf: bytearray) -> Records | None:
        """The block in one C pass (kv/_speedups.c tsv_records) when every
        line is a valid record; None (nothing counted) when some line is not:
        the numpy path then names it."""
        cap = int(np.count_nonzero(np.frombuffer(buf, dtype=np.uint8) == 10))  # lines: arrays of exactly that
        starts, klen, vlen = (np.empty(cap, dtype=np.int64) for _ in range(3))
        h64, checks = np.empty(cap, dtype=np.uint64), np.empty(cap, dtype=np.uint32)
        mode = 1 if self.options.strip_cr else 2 if self.options.keep_cr else 0
        got = c.tsv_records(buf, mode, starts, klen, vlen, h64, checks)
        if got is None:
            return None
        records, n, stripped = got
        starts, klen, vlen, h64, checks = starts[:n], klen[:n], vlen[:n], h64[:n], checks[:n]
        self.report.lines += n
        self.report.cr_stripped += stripped
        self.line_base += n
        return Records(records, starts, vlen, h64, checks, klen + vlen + 2)

    def _utf8_keys(self, arr: np.ndarray, starts: np.ndarray, klen: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """True for each line whose key is valid UTF-8 (ASCII keys: no Python work)."""
        valid = np.ones(len(starts), dtype=bool)
        if not (arr >= 0x80).any():
            return valid
        high = np.flatnonzero(arr >= 0x80)
        line_of_high = np.searchsorted(starts, high, side="right") - 1
        in_key = high < (starts + np.maximum(klen, 0))[line_of_high]
        for i in np.unique(line_of_high[in_key]).tolist():
            if ok[i]:
                try:
                    bytes(arr[starts[i] : starts[i] + klen[i]]).decode("utf-8")
                except UnicodeDecodeError:
                    valid[i] = False
        return valid

    def _check_lines(
        self,
        buf: bytearray,
        starts: np.ndarray,
        lens: np.ndarray,
        has_tab: np.ndarray,
        klen: np.ndarray,
        vlen: np.ndarray,
        ok: np.ndarray,
        cr: np.ndarray,
    ) -> None:
        """Stop at (or skip) each line the rules refuse, in line order."""
        cr = cr & ok  # a malformed line is reported as malformed, CR or not
        first_cr = int(np.argmax(cr)) if not self.options.strip_cr and cr.any() else len(starts)
        problems: list = []
        for i in np.flatnonzero(~ok).tolist():
            if i > first_cr:
                break
            text = bytes(buf[starts[i] : starts[i] + lens[i]])
            self._problem(i, tsv_problem(text), text, problems)
        if first_cr < len(starts):
            text = bytes(buf[starts[first_cr] : starts[first_cr] + lens[first_cr] + 2])
            self._fail(
                self.line_base + first_cr + 1,
                "line ends with CR LF (Windows line endings); pass --strip-cr to remove the CR, "
                "or --keep-cr to keep it as the value's last byte",
                text,
            )
        self.report.cr_stripped += int((cr & ok).sum()) if self.options.strip_cr else 0
        self._record_skips(problems)


def tsv_problem(text: bytes) -> str:
    """What is wrong with a malformed tsv line, in words."""
    if not text:
        return "empty line (expected `key<TAB>value`)"
    tab = text.find(b"\t")
    if tab < 0:
        return "no TAB separating key and value"
    why = key_problem(text[:tab])
    if why:
        return why
    return f"record is {len(text) + 1:,} bytes; the table format holds at most {MAX_RECORD:,} (key and value)"


class JsonlReader(StringReader):
    """One JSON object a line: {"key": str, "value": str} or {"key": str, "value_base64": str}."""

    max_line = JSONL_MAX_LINE

    def _block(self, buf: bytearray) -> Records:
        arr = np.frombuffer(buf, dtype=np.uint8)
        starts, ends = _line_bounds(arr)
        self.report.lines += len(starts)
        keys: list[bytes] = []
        values: list[bytes] = []
        problems: list = []
        loads = json.loads
        for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            line = bytes(buf[a:b])
            try:
                obj = loads(line)
                key, value = obj["key"].encode(), obj["value"].encode()  # the common case, no checks yet
                if obj.__class__ is not dict or len(key) > MAX_KEY or not key or len(obj) != 2:
                    raise ValueError
            except Exception:  # noqa: BLE001 - anything odd goes to the careful path, which names it
                parsed = jsonl_record(line)
                if isinstance(parsed, str):
                    self._problem(i, parsed, line, problems)
                    continue
                key, value = parsed
            if len(key) + len(value) + 2 > MAX_RECORD:
                self._problem(
                    i,
                    f"record is {len(key) + len(value) + 2:,} bytes; the table format holds at most {MAX_RECORD:,} (key and value)",
                    line,
                    problems,
                )
                continue
            keys.append(key)
            values.append(value)
        self._record_skips(problems)
        self.line_base += len(starts)
        return _records_from_pairs(keys, values)


def jsonl_record(line: bytes) -> tuple[bytes, bytes] | str:
    """(key, value) of a jsonl line, or what is wrong with it, in words."""
    if not line.strip():
        return "empty line (expected a JSON object)"
    try:
        obj = json.loads(line)
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    except ValueError as e:
        return f"not valid JSON ({e})"
    if not isinstance(obj, dict):
        return f"not a JSON object (a {type(obj).__name__})"
    if "key" not in obj:
        return 'missing field "key"'
    if not isinstance(obj["key"], str):
        return '"key" is not a string'
    try:
        key = obj["key"].encode("utf-8")
    except UnicodeEncodeError:
        return '"key" is not valid Unicode (a lone surrogate escape)'
    why = key_problem(key)
    if why:
        return why
    extra = sorted(set(obj) - {"key", "value", "value_base64"})
    if extra:
        return f'unknown field {extra[0]!r} (expected "key" and "value" or "value_base64")'
    if ("value" in obj) == ("value_base64" in obj):
        return 'expected exactly one of "value" and "value_base64"'
    if "value" in obj:
        if not isinstance(obj["value"], str):
            return '"value" is not a string (binary values go in "value_base64")'
        try:
            return key, obj["value"].encode("utf-8")
        except UnicodeEncodeError:
            return '"value" is not valid Unicode (a lone surrogate escape); use "value_base64"'
    if not isinstance(obj["value_base64"], str):
        return '"value_base64" is not a string'
    try:
        return key, base64.b64decode(obj["value_base64"], validate=True)
    except (binascii.Error, ValueError) as e:
        return f'"value_base64" is not valid base64 ({e})'


# -- records -------------------------------------------------------------------------------


def _assemble(
    arr: np.ndarray,
    keep_line: np.ndarray,
    ok: np.ndarray,
    cr: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    klen: np.ndarray,
    vlen: np.ndarray,
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """The kept lines' key and value bytes with a u16 key length in front of
    each: (bytes, record starts, key lengths, value lengths)."""
    klen, vlen = klen[ok], vlen[ok]
    if cr.any():
        keep_line[ends[cr & ok] - 1] = False  # a stripped CR
    keep_line[ends[ok]] = False  # the LF
    body = arr[keep_line]  # key + value of each kept line, back to back
    n = len(klen)
    if not n:
        return b"", np.zeros(0, dtype=np.int64), klen, vlen
    sizes = klen + vlen
    body_starts = np.empty(n, dtype=np.int64)
    body_starts[0] = 0
    np.cumsum(sizes[:-1], out=body_starts[1:])
    prefix = np.empty((n, 2), dtype=np.uint8)
    prefix[:, 0] = klen & 0xFF
    prefix[:, 1] = klen >> 8
    out = np.insert(body, np.repeat(body_starts, 2), prefix.ravel())
    rstarts = body_starts + 2 * np.arange(n, dtype=np.int64)
    return out.tobytes(), rstarts, klen, vlen


def _records_from_pairs(keys: list[bytes], values: list[bytes]) -> Records:
    parts = []
    for k, v in zip(keys, values, strict=True):
        parts.append(len(k).to_bytes(2, "little"))
        parts.append(k)
        parts.append(v)
    klen = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    vlen = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    rstarts = np.zeros(len(keys), dtype=np.int64)
    if len(keys):
        np.cumsum((klen + vlen + 2)[:-1], out=rstarts[1:])
    return _hashed(b"".join(parts), rstarts, klen, vlen)


def _hashed(buf: bytes, rstarts: np.ndarray, klen: np.ndarray, vlen: np.ndarray) -> Records:
    """Records with each key's xxh3_64 and each record's check."""
    lens = klen + vlen + 2
    c = native()
    if c is not None:
        h64 = np.empty(len(rstarts), dtype=np.uint64)
        whole = np.empty(len(rstarts), dtype=np.uint64)
        c.hash_spans(buf, rstarts + 2, rstarts + 2 + klen, h64)
        c.hash_spans(buf, rstarts, rstarts + lens, whole)
        checks = whole.astype(np.uint32)
    else:
        import xxhash

        x = xxhash.xxh3_64_intdigest
        cut = buf.__getitem__
        s = rstarts.tolist()
        h64 = np.fromiter(
            map(x, map(cut, map(slice, (rstarts + 2).tolist(), (rstarts + 2 + klen).tolist()))), dtype=np.uint64, count=len(s)
        )
        checks = np.fromiter(map(x, map(cut, map(slice, s, (rstarts + lens).tolist()))), dtype=np.uint64, count=len(s)).astype(np.uint32)
    return Records(buf, rstarts, vlen, h64, checks, lens)


__all__ = ["FORMATS", "JsonlReader", "TsvReader", "detect_format", "jsonl_record", "key_problem", "tsv_problem"]
