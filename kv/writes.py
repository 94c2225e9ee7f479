"""The writing side of a root: commit, recovery, and switching the base.

    ROOT/
      current -> generations/<base>.kvt   the base table
      log/<epoch>.log                     the changes since a base (kv/changelog.py)
      head                                what readers apply (kv/head.py)
      .write.lock                         writers, and every change of epoch
      .lock                               publishers, compaction, rollback (kv/publish.py)

A commit, under an exclusive flock on ROOT/.write.lock:

    1. read the head page; catch up (the writer's own reader view is then
       exactly the committed state, so a DELETE knows whether the key is there)
    2. append the group at the committed size (truncating whatever a writer
       that died before step 4 left beyond it) with pwrite, then fdatasync
    3. update the head page: committed size, sequence, counter
    4. unlock; the writer's worker applies its own group; then the 200

The log that goes with the base is the one of the highest epoch whose header
names that base: every switch of base (publish, compaction, rollback) writes
a new log first, fsyncs it, then renames `current`, so after a crash at any
point `current` and that log together are a state that was committed.

`recover` (run by `kv serve` before it forks workers) rebuilds the head page
from them, dropping a torn tail (a group whose checksum fails) from the log.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import changelog, settings
from . import format as fmt
from .changelog import DELETE, SET, Entry
from .errors import KVError
from .head import Head, HeadState, head_path
from .live import LiveTable
from .root import (  # noqa: F401 (the root's functions, importable from here as before)
    KEY_KINDS,
    PUBLISH_LOCK,
    WRITE_LOCK,
    _nothing,
    _recover_locked,
    active_epoch,
    create_empty_root,
    current_base,
    highest_seq,
    locked,
    prune_logs,
    recover,
    required_base,
    switch_base,
    write_head,
)

log = logging.getLogger("kv")

COMPACT_CHANGES = settings.COMPACT_CHANGES.default  # fold the log into a new base past this many changes ...
COMPACT_BYTES = settings.COMPACT_BYTES.default  # ... or this many log bytes
BEHIND = 4  # writes wait while the log holds this many times the compaction threshold ...
BEHIND_WAIT = 10.0  # ... and are refused (503) after waiting this long


class WriteRefused(KVError):
    """A write that is malformed (400) or too large (413); nothing was changed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Committed:
    generation: str
    seq: int
    sets: int = 0
    deletes: int = 0
    missing: list = field(default_factory=list)  # deleted keys that were absent (canonical bytes)


# -- locks --------------------------------------------------------------------------------------


class Writer:
    """Commits writes to a root for one process; `live` is that process's reader view."""

    def __init__(
        self,
        live: LiveTable,
        compact_changes: int = COMPACT_CHANGES,
        compact_bytes: int = COMPACT_BYTES,
        max_keys: int | None = None,
        background_compaction: bool = True,
    ):
        self.live = live
        self.root = live.root
        self.head = Head(head_path(self.root), writable=True)
        self.lock_fd = os.open(self.root / WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        self.mutex = threading.Lock()  # this process's writers, held as long as the flock
        self._alock: asyncio.Lock | None = None  # made in the event loop that uses it
        # Threads of its own: a lock wait and an fsync (a cancelled writer's may still run beside the next one's).
        self.threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kv-write")
        self.log_fd = -1
        self.log_epoch = -1
        self.compact_changes = compact_changes
        self.compact_bytes = compact_bytes
        self.max_keys = max_keys
        self.background_compaction = background_compaction
        self.compacting: threading.Thread | None = None
        self.sets = 0  # committed by this process
        self.deletes = 0

    # -- checking a write ---------------------------------------------------------------------

    def entries(self, sets: dict, deletes: Sequence[str | bytes]) -> list[Entry]:
        """The log entries for a write, keys canonical; WriteRefused (and
        nothing changed) for a malformed key or value, or too many keys."""
        n = len(sets) + len(deletes)
        if self.max_keys is not None and n > self.max_keys:
            raise WriteRefused(f"{n:,} keys in one write; the limit is {self.max_keys:,} (--max-batch)", 413)
        validate = self.live.validate_key
        kind = self.live.kind
        out: dict[bytes, tuple[int, bytes, bytes]] = {}
        for key, value in sets.items():
            kb = validate(key)  # InvalidKey
            if not isinstance(value, (bytes, bytearray)):
                raise WriteRefused(f"value of key {kb.decode(errors='replace')!r} is not bytes")
            value = bytes(value)
            if kind == "uuid":
                if b"\n" in value:
                    raise WriteRefused(f"value of key {kb.decode()} has a newline; values of UUID keys are one line")
                if len(value) > fmt.MAX_VALUE_LEN:
                    raise WriteRefused(f"value of key {kb.decode()} is {len(value):,} bytes; the limit is {fmt.MAX_VALUE_LEN:,}", 413)
            elif 2 + len(kb) + len(value) > fmt.MAX_STRING_RECORD:
                raise WriteRefused(
                    f"value of key {kb.decode(errors='replace')[:80]!r} is {len(value):,} bytes; "
                    f"key and value together must stay under {fmt.MAX_STRING_RECORD - 2:,}",
                    413,
                )
            if kb in out:
                raise WriteRefused(f"key {kb.decode(errors='replace')[:80]!r} is set twice in one write (two spellings of one key)")
            out[kb] = (SET, kb, value)
        for key in deletes:
            kb = validate(key)
            if kb in out:
                raise WriteRefused(f"key {kb.decode(errors='replace')[:80]!r} is both set and deleted in one write")
            out[kb] = (DELETE, kb, b"")
        if not out:
            raise WriteRefused("nothing to write: no key is set or deleted")
        return list(out.values())

    # -- committing -------------------------------------------------------------------------------

    def write(self, sets: dict | None = None, deletes: Sequence[str | bytes] = (), require_present: bool = False) -> Committed | None:
        """Commit one write, all or nothing; from the thread that serves this
        process's reads. None (nothing written) when `require_present` and a
        deleted key is absent."""
        kind = self.live.kind
        entries = self.entries(sets or {}, list(deletes))
        if (st := self._lagging()) is not None:
            raise self._refusal(st)
        self._lock()
        prepared = self._prepare_locked(entries, require_present, kind)
        if prepared is None:
            return None
        self._append_and_unlock(*prepared[:2])
        return self._done(entries, *prepared)

    async def write_async(
        self, sets: dict | None = None, deletes: Sequence[str | bytes] = (), require_present: bool = False
    ) -> Committed | None:
        """`write` for an event loop: the lock wait and the fsync run in a
        thread, so the loop goes on answering reads meanwhile. This process's
        writers queue on an asyncio lock first, so that at most one of them at
        a time needs a thread (writers queued in threads could take every
        thread the committing writer needs for its fsync)."""
        kind = self.live.kind
        entries = self.entries(sets or {}, list(deletes))
        await self._wait_for_compaction()
        async with self._queue():
            return await self._commit_async(entries, require_present, kind)

    def _queue(self) -> asyncio.Lock:
        if self._alock is None:
            self._alock = asyncio.Lock()
        return self._alock

    async def _commit_async(self, entries: list[Entry], require_present: bool, kind: str) -> Committed | None:
        loop = asyncio.get_running_loop()
        if not self._try_lock():  # uncontended (the usual case): no thread hop
            locking = loop.run_in_executor(self.threads, self._lock)
            try:
                await asyncio.shield(locking)
            except asyncio.CancelledError:
                locking.add_done_callback(self._unlock_when_locked)
                raise
        prepared = self._prepare_locked(entries, require_present, kind)
        if prepared is None:
            return None
        # Shielded: once started, the append finishes and unlocks even if this request is cancelled.
        await asyncio.shield(loop.run_in_executor(self.threads, self._append_and_unlock, *prepared[:2]))
        return self._done(entries, *prepared)

    def _prepare_locked(self, entries: list[Entry], require_present: bool, kind: str) -> tuple[HeadState, bytes, list[bytes]] | None:
        """`_prepare` with the lock held: the lock stays held only when a
        write is prepared (to be appended), and is released otherwise."""
        try:
            prepared = self._prepare(entries, require_present, kind)
        except BaseException:
            self._unlock()
            raise
        if prepared is None:
            self._unlock()
        return prepared

    def _unlock_when_locked(self, locking: asyncio.Future) -> None:
        if not locking.cancelled() and locking.exception() is None:
            self._unlock()

    def _try_lock(self) -> bool:
        if not self.mutex.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            self.mutex.release()
            return False
        except BaseException:
            self.mutex.release()
            raise

    def _behind(self, st: HeadState, factor: int = BEHIND) -> bool:
        return st.changes >= factor * self.compact_changes or st.log_size >= factor * self.compact_bytes

    def _refusal(self, st: HeadState) -> WriteRefused:
        return WriteRefused(
            f"{st.changes:,} changes wait to be compacted into a new base, {BEHIND} times the threshold "
            "(--compact-changes, --compact-bytes) or more, for longer than "
            f"{BEHIND_WAIT:g} s; try again once compaction has run (the server log says why it lags)",
            503,
        )

    def _lagging(self) -> HeadState | None:
        """The head state when compaction lags far behind (and a compaction started), else None."""
        read = self.head.read()
        if read is None or not self._behind(read[1]):
            return None
        self.maybe_compact()
        return read[1]

    async def _wait_for_compaction(self) -> None:
        """Compaction has not kept up (or keeps failing: see the log): hold this
        write back until it has, at most BEHIND_WAIT seconds, then refuse it,
        rather than let every worker's overlay grow without bound."""
        t0 = time.monotonic()
        while (st := self._lagging()) is not None:
            if time.monotonic() - t0 > BEHIND_WAIT:
                raise self._refusal(st)
            await asyncio.sleep(0.05)

    def _lock(self) -> None:
        self.mutex.acquire()
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        except BaseException:
            self.mutex.release()
            raise

    def _unlock(self) -> None:
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        finally:
            self.mutex.release()

    def _state(self) -> HeadState:
        """The head under the lock; a torn head (a writer died mid-update) is rebuilt first."""
        read = self.head.read() if not self.head.torn() else None
        if read is None:
            log.warning("%s: head page torn by an interrupted writer; rebuilding it from the log", self.root)
            state = _recover_locked(self.root)
            self.live.catch_up()
            return state
        return read[1]

    def _prepare(self, entries: list[Entry], require_present: bool, kind: str) -> tuple[HeadState, bytes, list[bytes]] | None:
        st = self._state()
        if st.kind != kind:  # a publish of the other key kind since the keys were checked
            raise WriteRefused(f"the root now holds {st.kind} keys (a publish since this write began); nothing was written", 409)
        if self._behind(st, 2 * BEHIND):  # writers raced past the wait in `_wait_for_compaction`
            raise self._refusal(st)
        self.live.catch_up()  # now exactly the committed state: we hold the lock
        if self.live.error:
            raise WriteRefused(f"this worker cannot read the committed state ({self.live.error})", 503)
        missing = [kb for op, kb, _ in entries if op == DELETE and self.live.lookup_canonical(kb) is None]
        if missing and require_present:
            return None
        seq = st.seq + 1
        return st, changelog.encode_group(seq, entries), missing

    def _append_and_unlock(self, st: HeadState, group: bytes) -> None:
        try:
            if self.log_epoch != st.epoch:
                if self.log_fd >= 0:
                    os.close(self.log_fd)
                    self.log_fd = -1
                self.log_fd = os.open(changelog.log_path(self.root, st.epoch), os.O_RDWR)
                self.log_epoch = st.epoch
            fd = self.log_fd
            if os.fstat(fd).st_size != st.log_size:
                os.ftruncate(fd, st.log_size)  # bytes of a writer that died before its head update: never acknowledged
            view = memoryview(group)
            at = st.log_size
            while view:
                n = os.pwrite(fd, view, at)
                view, at = view[n:], at + n
            os.fdatasync(fd)
            entries = changelog.GROUP.unpack_from(group, 0)[1]
            seq = changelog.GROUP.unpack_from(group, 0)[2]
            self.head.update(HeadState(st.kind, st.epoch, at, seq, st.changes + entries, st.base))
        finally:
            self._unlock()

    def _done(self, entries: list[Entry], st: HeadState, group: bytes, missing: list[bytes]) -> Committed:
        seq = changelog.GROUP.unpack_from(group, 0)[2]
        # Our own write (read-your-writes in this process): from the entries
        # in hand when nothing came before it in the log, else read from the log.
        if not self.live.apply_own(st.epoch, st.log_size, st.log_size + len(group), seq, entries):
            self.live.catch_up()
        sets = sum(1 for op, _, _ in entries if op == SET)
        self.sets += sets
        self.deletes += len(entries) - sets
        self.maybe_compact()
        # The generation right after this write (others may have followed it already).
        return Committed(f"{st.base}-{seq}", seq, sets, len(entries) - sets, missing)

    # -- compaction -------------------------------------------------------------------------------

    def due(self) -> bool:
        read = self.head.read()
        if read is None:
            return False
        st = read[1]
        return st.changes >= self.compact_changes or st.log_size >= self.compact_bytes

    def maybe_compact(self) -> None:
        """Past the threshold, fold the log into a new base in a child process
        (ROOT/.lock makes it one at a time across workers); reads and writes go on."""
        if not self.background_compaction or (self.compacting and self.compacting.is_alive()) or not self.due():
            return
        self.compacting = threading.Thread(target=run_compaction, args=(self.root,), name="kv-compact", daemon=True)
        self.compacting.start()

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        if self.log_fd >= 0:
            os.close(self.log_fd)
        os.close(self.lock_fd)
        self.head.close()


def run_compaction(root: Path) -> int:
    """`python -m kv.compact ROOT` in a child process, waited for (and so reaped) by the calling thread."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "kv.compact", str(root)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None, check=False
        ).returncode
    except OSError as e:
        log.error("cannot start compaction of %s: %s", root, e)
        return -1
