"""Generate data files like the reference sample: random UUID4 keys, values of
1-10 random lowercase words of 1-10 letters. Vectorised with numpy, a block of
records at a time; the same seed gives the same file."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

import numpy as np

BLOCK = 200_000
_HEXDIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# Where each of the 32 hex digits goes in the 36-character key.
_DIGIT_AT = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


_KEY_CHARS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789:/_-.", dtype=np.uint8)
STRING_KEY_LENGTHS = (8, 40)  # bytes, inclusive


def generate(n: int, out: BinaryIO, seed: int = 0, block: int = BLOCK, keys: str = "uuid") -> int:
    """Write `n` records to the binary file object `out`; return bytes written.
    keys="string" writes tsv lines instead: keys of 8-40 characters from
    [a-z0-9:/_-.], unique (the last 8 are the record's number in hex)."""
    rng = np.random.default_rng(seed)
    written = 0
    for a in range(0, n, block):
        data = _block(rng, min(block, n - a))
        if keys == "string":
            data = _as_tsv(rng, data, a)
        out.write(data)
        written += len(data)
    return written


def _as_tsv(rng: np.random.Generator, uuid_lines: bytes, first: int) -> bytes:
    """The same values under string keys, `key<TAB>value` lines."""
    arr = np.frombuffer(uuid_lines, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    n = len(ends)
    starts = np.r_[0, ends[:-1] + 1]
    vlen = ends - starts - 37
    lo, hi = STRING_KEY_LENGTHS
    klen = rng.integers(lo, hi + 1, size=n)
    line_len = klen + 1 + vlen + 1
    out_start = np.r_[0, np.cumsum(line_len)[:-1]]
    buf = np.empty(int(line_len.sum()), dtype=np.uint8)
    # Values (with their newline) move to just after key and TAB.
    vstart = out_start + klen + 1
    within = np.arange(int((vlen + 1).sum())) - np.repeat(np.r_[0, np.cumsum(vlen + 1)[:-1]], vlen + 1)
    buf[np.repeat(vstart, vlen + 1) + within] = arr[np.repeat(starts + 37, vlen + 1) + within]
    # Keys: random characters, then 8 hex digits of the record number (unique).
    kpos = np.repeat(out_start, klen) + (np.arange(int(klen.sum())) - np.repeat(np.r_[0, np.cumsum(klen)[:-1]], klen))
    buf[kpos] = _KEY_CHARS[rng.integers(0, len(_KEY_CHARS), size=len(kpos))]
    number = np.arange(first, first + n, dtype=np.uint64)
    for d in range(8):
        buf[out_start + klen - 1 - d] = _HEXDIGITS[((number >> np.uint64(4 * d)) & np.uint64(15)).astype(np.int64)]
    buf[out_start + klen] = ord("\t")
    return buf.tobytes()


def _block(rng: np.random.Generator, n: int) -> bytes:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    nibbles = np.empty((n, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    keys = np.full((n, 37), ord("-"), dtype=np.uint8)
    keys[:, _DIGIT_AT] = _HEXDIGITS[nibbles]
    keys[:, 36] = ord(" ")

    words = rng.integers(1, 11, size=n)  # words per value
    nw = int(words.sum())
    wlen = rng.integers(1, 11, size=nw)  # letters per word
    vlen = np.add.reduceat(wlen + 1, np.r_[0, np.cumsum(words)[:-1]])  # letters + separators
    line_len = 37 + vlen  # key, space, value, newline
    line_start = np.r_[0, np.cumsum(line_len)[:-1]]
    total = int(line_len.sum())
    buf = rng.integers(ord("a"), ord("z") + 1, size=total, dtype=np.uint8)
    # Every word ends in a separator: a space, or the newline after the last word.
    word_rec = np.repeat(np.arange(n), words)
    word_end_in_value = np.cumsum(wlen + 1) - np.repeat(np.r_[0, np.cumsum(vlen)[:-1]], words) - 1
    sep_at = line_start[word_rec] + 37 + word_end_in_value
    buf[sep_at] = ord(" ")
    buf[line_start + line_len - 1] = ord("\n")
    idx = line_start[:, None] + np.arange(37)
    buf[idx] = keys
    return buf.tobytes()


def generate_file(n: int, path: str | os.PathLike, seed: int = 0, keys: str = "uuid") -> int:
    if str(path) == "-":
        return generate(n, sys.stdout.buffer, seed, keys=keys)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            size = generate(n, f, seed, keys=keys)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return size
