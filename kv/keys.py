"""Keys: UUIDs in canonical 8-4-4-4-12 lower-case form.

The table stores and hashes the canonical 36-byte ASCII form. Lookups try the
caller's bytes first (fast path, no parsing); only when that misses do we
validate and canonicalise, to tell a malformed key (400) from an absent one (404).
"""

from __future__ import annotations

from .errors import InvalidKey

KEY_LEN = 36
HYPHENS = (8, 13, 18, 23)
_HEX_DIGITS = b"0123456789abcdef"
_HEX_DIGITS_HYPHEN = _HEX_DIGITS + b"-"


def canonical_key(key: str | bytes) -> bytes:
    """Return the canonical 36-byte lower-case form of `key`, or raise InvalidKey.

    Accepts the 36-character hyphenated form in any letter case and the
    32-character hex form without hyphens. Any UUID version is accepted.
    """
    if isinstance(key, str):
        if not key.isascii():
            raise InvalidKey(f"key {key[:80]!r} has non-ASCII characters; a key is a UUID like 3479d894-3271-4935-88cf-a06f3cbb80a5")
        raw = key.encode("ascii")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
    else:
        raise InvalidKey(f"key must be str or bytes, not {type(key).__name__}")
    low = raw.lower()
    n = len(low)
    if n == KEY_LEN:
        if low[8] != 0x2D or low[13] != 0x2D or low[18] != 0x2D or low[23] != 0x2D:
            i = next(i for i in HYPHENS if low[i] != 0x2D)
            raise InvalidKey(f"key {_show(raw)} has {chr(low[i])!r} at position {i + 1}, expected '-' (UUID form is 8-4-4-4-12 hex digits)")
        if not low.translate(None, _HEX_DIGITS_HYPHEN) and low.count(b"-") == 4:
            return low
        digits = low[0:8] + low[9:13] + low[14:18] + low[19:23] + low[24:36]
    elif n == 32:
        digits = low
    else:
        raise InvalidKey(
            f"key {_show(raw)} is {n} characters long; expected 36 (8-4-4-4-12 hex digits with hyphens) or 32 (hex digits only)"
        )
    rest = digits.translate(None, _HEX_DIGITS)  # what is left once hex digits are deleted (C speed)
    if rest:
        raise InvalidKey(f"key {_show(raw)} has a character that is not a hex digit: {chr(rest[0])!r}")
    d = digits
    return d[0:8] + b"-" + d[8:12] + b"-" + d[12:16] + b"-" + d[16:20] + b"-" + d[20:32]


def _show(raw: bytes) -> str:
    text = raw[:80].decode("ascii", "backslashreplace")
    return repr(text) + ("..." if len(raw) > 80 else "")


def shard_of(key: bytes, shard_count: int) -> int:
    """The shard of a canonical key: the leading log2(shard_count) bits of the
    UUID's first byte (its first two hex digits). shard_count is a power of 2."""
    if shard_count <= 1:
        return 0
    return int(key[:2], 16) >> (8 - (shard_count.bit_length() - 1))


# -- string keys (format version 2) ------------------------------------------------------

MAX_STRING_KEY = 1024  # bytes of UTF-8; kv.format.MAX_STRING_KEY


def string_key(key: str | bytes) -> bytes:
    """The UTF-8 bytes of a string key, or InvalidKey naming the fault.

    A string key is a non-empty UTF-8 string of at most 1,024 bytes. Keys
    compare byte-exact: no case folding, no Unicode normalisation.
    """
    if isinstance(key, str):
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidKey(
                f"key {_show_text(key)} is not valid Unicode ({e.reason} at character {e.start + 1}); a key is a UTF-8 string"
            ) from None
    elif isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidKey(f"key {_show(raw)} is not valid UTF-8 (byte {e.start + 1}); a key is a UTF-8 string") from None
    else:
        raise InvalidKey(f"key must be str or bytes, not {type(key).__name__}")
    if not raw:
        raise InvalidKey("key is empty; a key is 1 to 1,024 bytes of UTF-8")
    if len(raw) > MAX_STRING_KEY:
        raise InvalidKey(f"key {_show(raw)} is {len(raw):,} bytes of UTF-8; the limit is {MAX_STRING_KEY:,}")
    return raw


def _show_text(text: str) -> str:
    return repr(text[:80].encode("utf-8", "backslashreplace").decode("utf-8")) + ("..." if len(text) > 80 else "")


def string_shard_of(key: bytes, shard_count: int) -> int:
    """The shard of a string key: the low log2(shard_count) bits of its
    xxh3_64 hash (never characters of the key, which are not uniform; not the
    top bits either, which choose the key's home slot inside the shard)."""
    if shard_count <= 1:
        return 0
    import xxhash

    return xxhash.xxh3_64_intdigest(key) & (shard_count - 1)


# A string-key shard server answers a key of another shard 421 with the header
# `X-Accel-Redirect: SHARD_REDIRECT` (index = the key's shard): the nginx front
# of a string-key deployment (kv/deploy.py) follows it internally to that
# shard's upstream, since nginx cannot compute string_shard_of itself.
SHARD_REDIRECT = "/_kv_shard/{index}"
