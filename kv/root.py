"""A writable root's state outside any one writer: its locks, its current base
and change log, recovery after a crash (the head rebuilt from `current` and
its log, a torn tail dropped), and switching to a new base (compaction,
publish). kv/writes.py's Writer and kv/compact.py use these."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import changelog
from .changelog import HEADER_SIZE, LogHeader
from .errors import KVError
from .head import Head, HeadError, HeadState, create_head, head_path
from .live import base_path

log = logging.getLogger("kv")

WRITE_LOCK = ".write.lock"
PUBLISH_LOCK = ".lock"  # kv/publish.py's
KEY_KINDS = ("uuid", "string")


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
