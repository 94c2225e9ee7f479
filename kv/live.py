"""The reading side of a root: the base table plus the changes since it.

A worker serving `kv serve --root ROOT` holds one `LiveTable`: the base table
ROOT/head names (mapped read-only, as ever) and an overlay dict of the
changes the change log holds since it (canonical key -> value bytes, or None
for a deleted key), filled from the log with `os.pread`.

Per request, `refresh()` compares the head page's change counter with the one
last applied: one `unpack_from` and one compare. Only when it moved does
`catch_up()` read the head (seqlock: it retries, never waits) and either
apply the new log bytes or, when the epoch changed (a publish, compaction or
rollback), open the new base and log and swap everything in one assignment.

Nothing here takes a lock, and every change is applied by the thread that
serves reads (the worker's event loop) between two requests: a request sees
a write's changes all or none, and a batch read done without an `await` sees
exactly one generation.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import changelog
from .changelog import SET, ChangeLogCorrupt
from .errors import KVError, TableCorrupt
from .format import Header
from .head import Head, HeadState, head_path
from .table import Table, open_table

log = logging.getLogger("kv")
MISSING = object()
RETRY_SECONDS = 0.5
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def _any(kb: bytes) -> bool:
    return True


def base_path(root: str | os.PathLike, generation: str) -> Path:
    return Path(root) / "generations" / f"{generation}.kvt"


class LiveTable:
    """Base table + overlay of a root, kept current from ROOT/head.

    `get(key)` answers like `Table.get` (value bytes, None, InvalidKey);
    `refresh()` is the per-request check; `generation` names what is served:
    the base generation while there are no changes, else `<base>-<seq>`."""

    def __init__(self, root: str | os.PathLike, head: Head | None = None):
        self.root = Path(root)
        self.head = head or Head(head_path(root))
        # Mutable cells the hot paths bind once: [last counter applied] and
        # [base lookup, overlay, key validator].
        self.seen = [-1]
        self.view: list = [None, {}, None, None]
        self.table: Table = None  # type: ignore[assignment]  # set by the first catch_up; __init__ raises otherwise
        self.epoch = -1
        self.base = ""
        self.kind = "uuid"
        self.applied = 0  # log bytes applied
        self.log_fd = -1
        self.log_name = Path()  # the log's path, for messages (made once per epoch, not per catch-up)
        self.last_seq = 0  # sequence of the last group applied (0: none since the base)
        self.changes = 0  # log entries applied since the base
        self.keys_delta = 0
        self.value_bytes_delta = 0
        self.error = ""  # why the last catch-up failed, if it did
        self.retry_at = 0.0
        self.listeners: list = []  # called with no arguments after the generation changed
        self.counter = self.head.counter
        self.catch_up()
        if self.table is None:
            raise KVError(f"{self.root}: cannot serve it: {self.error or 'the head page is being rewritten'}")
        self.get = self._make_get()

    # -- the per-request check ---------------------------------------------------------

    def refresh(self) -> None:
        if self.counter() != self.seen[0]:
            self.catch_up()

    def catch_up(self) -> None:
        """Apply what the head page says was committed since the last call.
        After a failure (logged; /readyz says it) it tries again at most every
        RETRY_SECONDS, at the next request after that."""
        if self.error and time.monotonic() < self.retry_at:
            return
        read = self.head.read()
        if read is None:
            return  # a writer is mid-update (or died there): keep what we have, look again next request
        counter, st = read
        try:
            if st.epoch != self.epoch or st.base != self.base or st.log_size < self.applied:
                self._reopen(st)
            elif st.log_size > self.applied:
                groups = changelog.read_groups(self.log_fd, self.applied, st.log_size, self.log_name)
                self._apply(groups, self.view[1], self.view[0])
                self.applied = st.log_size
            self.error = ""
        except (OSError, KVError) as e:
            self.error = f"cannot apply {self.root}'s head (epoch {st.epoch}, {st.log_size} log bytes): {e}"
            self.retry_at = time.monotonic() + RETRY_SECONDS
            log.error("%s; still serving %s", self.error, self.generation if self.table else "nothing")
            return  # `seen` stays: the next request after RETRY_SECONDS tries again
        self.seen[0] = counter
        for listener in self.listeners:
            listener()

    def apply_own(self, epoch: int, start: int, end: int, seq: int, entries: list[changelog.Entry]) -> bool:
        """Apply the group this process has just committed at [start, end) of
        the log of `epoch`, from its entries rather than by reading it back:
        only when this view stands exactly at `start` of that log (else, say
        when another worker's group came first, False: `catch_up` reads the log).
        The head's counter is left as it was: the next `refresh` reads the head
        once and finds nothing more to apply."""
        if epoch != self.epoch or start != self.applied or self.error:
            return False
        self._apply([changelog.Group(seq, entries, start, end)], self.view[1], self.view[0])
        self.applied = end
        for listener in self.listeners:
            listener()
        return True

    def _reopen(self, st: HeadState) -> None:
        table = open_table(base_path(self.root, st.base))
        if table.key_kind != st.kind:
            raise TableCorrupt(f"{table.path}: a {table.key_kind}-key table, the head page says {st.kind} keys")
        path = changelog.log_path(self.root, st.epoch)
        fd = os.open(path, os.O_RDONLY)
        try:
            header = changelog.parse_header(os.pread(fd, changelog.HEADER_SIZE, 0), path)
            if header.epoch != st.epoch or header.base != st.base:
                raise ChangeLogCorrupt(
                    f"{path}: log of epoch {header.epoch} on base {header.base}, the head page says epoch {st.epoch} on {st.base}"
                )
            # Applied a chunk at a time into a new overlay (a long log is never
            # held whole); the counters are put back if the log fails part way.
            overlay: dict = {}
            before = self.keys_delta, self.value_bytes_delta, self.changes, self.last_seq
            self.keys_delta = self.value_bytes_delta = self.changes = self.last_seq = 0
            try:
                for groups in changelog.iter_groups(fd, changelog.HEADER_SIZE, st.log_size, path):
                    self._apply(groups, overlay, table.get)
            except BaseException:
                self.keys_delta, self.value_bytes_delta, self.changes, self.last_seq = before
                raise
        except BaseException:
            os.close(fd)
            raise
        old_fd = self.log_fd
        # The swap: from here on every lookup uses the new base and overlay.
        self.table, self.kind, self.base, self.epoch, self.log_fd, self.log_name = table, st.kind, st.base, st.epoch, fd, path
        # Canonical: a lower-case 8-4-4-4-12 UUID; for string keys any bytes
        # (the base lookup validates them).
        self.view[:] = [table.get, overlay, table.validate_key, _UUID if st.kind == "uuid" else _any]
        self.applied = st.log_size
        if old_fd >= 0:
            os.close(old_fd)

    def _apply(self, groups: list[changelog.Group], overlay: dict, base_get: Callable[[bytes], bytes | None]) -> None:
        keys, value_bytes, changes = self.keys_delta, self.value_bytes_delta, self.changes
        for g in groups:
            for op, key, value in g.entries:
                old = overlay.get(key, MISSING)
                if old is MISSING:
                    old = base_get(key)
                if old is not None:
                    keys -= 1
                    value_bytes -= len(old)
                if op == SET:
                    overlay[key] = value
                    keys += 1
                    value_bytes += len(value)
                else:
                    overlay[key] = None
            changes += len(g.entries)
            self.last_seq = g.seq
        self.keys_delta, self.value_bytes_delta, self.changes = keys, value_bytes, changes

    # -- lookups -----------------------------------------------------------------------------

    def _make_get(self) -> Callable[[str | bytes], bytes | None]:
        view = self.view
        missing = MISSING

        def get(key: str | bytes) -> bytes | None:
            """Value bytes for `key` (str or bytes), None if absent; InvalidKey if malformed."""
            table_get, overlay, validate, canonical = view
            if overlay:
                # The overlay holds canonical keys: a key given in canonical
                # form (the usual case) is looked up as it is; any other
                # spelling is validated and canonicalised first.
                try:
                    kb = key.encode() if key.__class__ is str else key
                except UnicodeError:
                    kb = validate(key)  # raises InvalidKey
                value = overlay.get(kb, missing)
                if value is not missing:
                    return value
                if canonical(kb) is None:
                    kb = validate(key)
                    value = overlay.get(kb, missing)
                    if value is not missing:
                        return value
                return table_get(kb)
            return table_get(key)

        return get

    def lookup_canonical(self, kb: bytes) -> bytes | None:
        """Value of a canonical key (no validation)."""
        table_get, overlay = self.view[:2]
        value = overlay.get(kb, MISSING)
        return table_get(kb) if value is MISSING else value

    def validate_key(self, key: str | bytes) -> bytes:
        return self.view[2](key)

    def get_canonical(self, key: str | bytes) -> tuple[bytes, bytes | None]:
        kb = self.view[2](key)
        return kb, self.lookup_canonical(kb)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of everything served, base order then new keys."""
        table_get, overlay = self.view[:2]
        for k, v in self.table.items():
            if k not in overlay:
                yield k, v
        for k, v in list(overlay.items()):
            if v is not None:
                yield k, v

    # -- what is served ----------------------------------------------------------------------

    @property
    def generation(self) -> str:
        return f"{self.base}-{self.last_seq}" if self.last_seq else self.base

    @property
    def keys(self) -> int:
        return len(self.table) + self.keys_delta

    @property
    def value_bytes(self) -> int:
        return self.table.value_bytes + self.value_bytes_delta

    @property
    def pending(self) -> int:
        """Changes (log entries) applied on top of the base table."""
        return self.changes

    def __len__(self) -> int:
        return self.keys

    # What the HTTP layer reads of a Table, from the base.

    @property
    def key_kind(self) -> str:
        return self.kind

    @property
    def header(self) -> Header:
        return self.table.header

    @property
    def meta(self) -> dict:
        return self.table.meta

    @property
    def file_bytes(self) -> int:
        return self.table.file_bytes

    @property
    def path(self) -> Path:
        return self.table.path

    def close(self) -> None:
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1
        self.head.close()
