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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import changelog
from . import format as fmt
from .changelog import DELETE, HEADER_SIZE, SET, Entry, LogHeader
from .errors import KVError
from .head import Head, HeadError, HeadState, create_head, head_path
from .live import LiveTable, base_path

log = logging.getLogger("kv")

WRITE_LOCK = ".write.lock"
PUBLISH_LOCK = ".lock"  # kv/publish.py's
COMPACT_CHANGES = 100_000  # fold the log into a new base past this many changes ...
COMPACT_BYTES = 64 << 20  # ... or this many log bytes
KEY_KINDS = ("uuid", "string")
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


@contextmanager
def locked(root: str | os.PathLike, name: str = WRITE_LOCK, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on ROOT/NAME; yields False (holding nothing) when
    not blocking and someone else holds it."""
    fd = os.open(Path(root) / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# -- recovery and roots -------------------------------------------------------------------------


def current_base(root: Path) -> str | None:
    try:
        return Path(os.readlink(root / "current")).stem
    except OSError:
        return None


def required_base(root: Path) -> str:
    base = current_base(root)
    if base is None:
        raise KVError(f"{root}/current does not exist (or is not a symlink to a generation)")
    return base


def active_epoch(root: Path, base: str) -> int | None:
    """The epoch of the log that goes with `base`: the highest naming it."""
    for epoch in reversed(changelog.epochs(root)):
        try:
            if changelog.read_header(changelog.log_path(root, epoch)).base == base:
                return epoch
        except (OSError, KVError):
            continue
    return None


def highest_seq(root: Path) -> int:
    """The largest sequence number any log names (floors and groups of the newest)."""
    seq = 0
    found = changelog.epochs(root)
    for epoch in found:
        try:
            seq = max(seq, changelog.read_header(changelog.log_path(root, epoch)).seq_floor)
        except (OSError, KVError):
            continue
    if found:
        try:
            _, groups, _, _ = changelog.scan(changelog.log_path(root, found[-1]))
            seq = max([seq] + [g.seq for g in groups])
        except (OSError, KVError):
            pass
    return seq


def create_empty_root(root: Path, kind: str, log_: Callable[[str], object] = print) -> str:
    """A writable root with no generation yet: an empty table of `kind` keys
    becomes its first generation."""
    from . import publish
    from .merge import write_table

    if kind not in KEY_KINDS:
        raise KVError(f"key kind must be one of {', '.join(KEY_KINDS)}, not {kind!r}")
    gens = publish.generations_dir(root)
    publish._make_dir(gens)
    tmp = gens / f".empty-{os.getpid()}.kvt"
    generation = write_table(tmp, [], kind, {"source": {"name": "(empty)"}})
    os.replace(tmp, publish.generation_path(root, generation))
    changelog.fsync_dir(gens)
    publish._write_history(root, [generation])
    publish._point_current(root, generation)
    log_(f"{root}: started empty ({kind} keys), generation {generation}")
    return generation


def recover(root: str | os.PathLike, create_kind: str | None = None, log_: Callable[[str], object] = print) -> HeadState:
    """Make ROOT servable and its head page true: find the base and its log
    (making an empty log when the base has none), drop a torn tail, rewrite
    the head. With `create_kind`, a root with no generation starts empty."""
    from .table import open_table

    root = Path(root)
    with locked(root, PUBLISH_LOCK) if root.is_dir() else _nothing():
        if current_base(root) is None:
            if create_kind is None:
                raise KVError(
                    f"{root}: no generation to serve ({root}/current does not exist); "
                    f"publish one with `kv publish DATA --root {root}`, or start it empty with --writable"
                )
            root.mkdir(parents=True, exist_ok=True)
            with locked(root, WRITE_LOCK):
                create_empty_root(root, create_kind, log_)
        with locked(root, WRITE_LOCK):
            base = required_base(root)
            with open_table(root / "current") as t:
                kind = t.key_kind
            epoch = active_epoch(root, base)
            if epoch is None:
                known = changelog.epochs(root)
                epoch = (known[-1] if known else 0) + 1
                changelog.create_log(root, LogHeader(kind, epoch, known[-1] if known else 0, highest_seq(root), base))
            path = changelog.log_path(root, epoch)
            header, groups, end, size = changelog.scan(path)
            if size > end:
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
                log_(f"{path}: dropped a torn tail of {size - end} bytes (a write that was never acknowledged)")
            seq = max([header.seq_floor, highest_seq(root)] + [g.seq for g in groups])
            state = HeadState(kind, epoch, end, seq, sum(len(g.entries) for g in groups), base)
            write_head(root, state)
            return state


@contextmanager
def _nothing() -> Iterator[bool]:
    yield True


def write_head(root: Path, state: HeadState) -> None:
    """Update ROOT/head in place (mappings stay valid), or create it."""
    try:
        head = Head(head_path(root), writable=True)
    except (FileNotFoundError, HeadError):
        create_head(head_path(root), state)
        return
    try:
        head.update(state)
    finally:
        head.close()


def switch_base(
    root: Path, generation: str, kind: str, prev_epoch: int, body: bytes = b"", entries: int = 0, last_seq: int | None = None
) -> HeadState:
    """Under ROOT/.write.lock: make `generation` the base with a new log
    holding `body` (whole groups), point `current` at it, update the head.
    The order makes a crash anywhere leave the old state or the new one."""
    from . import publish

    known = changelog.epochs(root)
    epoch = (known[-1] if known else 0) + 1
    try:
        head = Head(head_path(root), writable=True)
        read = head.read()
        head.close()
    except (FileNotFoundError, HeadError):
        read = None
    seq = max(read[1].seq if read else 0, highest_seq(root), last_seq or 0)
    changelog.create_log(root, LogHeader(kind, epoch, prev_epoch, seq, generation), body)
    if current_base(root) != generation:
        publish._point_current(root, generation)
    state = HeadState(kind, epoch, HEADER_SIZE + len(body), seq, entries, generation)
    write_head(root, state)
    return state


def prune_logs(root: Path, keep_epochs: int = 8) -> None:
    """Delete logs whose base table is gone, and all but the newest
    `keep_epochs` (the active one always stays)."""
    known = changelog.epochs(root)
    active = known[-1] if known else None
    for i, epoch in enumerate(known):
        if epoch == active:
            continue
        path = changelog.log_path(root, epoch)
        try:
            base = changelog.read_header(path).base
            gone = not base_path(root, base).exists()
        except (OSError, KVError):
            gone = True
        if gone or i < len(known) - keep_epochs:
            path.unlink(missing_ok=True)


# -- the writer ---------------------------------------------------------------------------------


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
        try:
            prepared = self._prepare(entries, require_present, kind)
        except BaseException:
            self._unlock()
            raise
        if prepared is None:
            self._unlock()
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
        try:
            prepared = self._prepare(entries, require_present, kind)
        except BaseException:
            self._unlock()
            raise
        if prepared is None:
            self._unlock()
            return None
        # Shielded: once started, the append finishes and unlocks even if this request is cancelled.
        await asyncio.shield(loop.run_in_executor(self.threads, self._append_and_unlock, *prepared[:2]))
        return self._done(entries, *prepared)

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
        self.live.catch_up()  # our own write (and maybe later ones): read-your-writes in this process
        sets = sum(1 for op, _, _ in entries if op == SET)
        self.sets += sets
        self.deletes += len(entries) - sets
        self.maybe_compact()
        seq = changelog.GROUP.unpack_from(group, 0)[2]
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


def _recover_locked(root: Path) -> HeadState:
    """Rebuild the head from `current` and its log (the caller holds the write lock)."""
    from .table import open_table

    base = required_base(root)
    with open_table(root / "current") as t:
        kind = t.key_kind
    epoch = active_epoch(root, base)
    if epoch is None:
        raise KVError(f"{root}: no change log for base {base}; restart `kv serve` to recover the root")
    header, groups, end, size = changelog.scan(changelog.log_path(root, epoch))
    if size > end:
        os.truncate(changelog.log_path(root, epoch), end)
    state = HeadState(kind, epoch, end, max([header.seq_floor] + [g.seq for g in groups]), sum(len(g.entries) for g in groups), base)
    write_head(root, state)
    return state
