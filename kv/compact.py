"""Compaction: fold the change log into a new base table, in the background.

    python -m kv.compact ROOT      (what a worker starts past the threshold)

1. Take ROOT/.lock without waiting (the publishers' lock): one compaction at
   a time, never during a publish or rollback; if it is held, do nothing.
2. Read the head: base B, log epoch E, committed size L0. Write the table of
   B with the log's changes up to L0 applied (kv/merge.py) as a new
   generation C. Writers go on appending to log E meanwhile; readers go on
   reading B and the log.
3. Under ROOT/.write.lock (a few milliseconds): copy the groups committed
   after L0 into a new log E+1 on base C, fsync it, point `current` at C,
   update the head. Readers see the new epoch at their next request and
   switch to C and the new log; no reader waits for any of it.

A crash before `current` moves leaves B with log E (the highest log on B),
after it C with log E+1: the same data either way. The old log E stays (its
header is where `kv rollback` finds the state to return to) until pruned.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import changelog
from .changelog import DELETE, HEADER_SIZE
from .errors import KVError
from .head import Head, head_path
from .live import base_path
from .writes import PUBLISH_LOCK, WRITE_LOCK, locked, prune_logs, switch_base

if TYPE_CHECKING:
    from .table import Table

State = tuple[str, int, list[changelog.Group], bytes]  # an earlier state: base, its previous epoch, groups, their bytes


def merged_items(table: Table, changes: dict[bytes, bytes | None]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `table` with `changes` (key -> value or None) applied."""
    for key, value in table.items():
        if key not in changes:
            yield key, value
    for key, change in changes.items():
        if change is not None:
            yield key, change


def compact(root: str | os.PathLike, log: Callable[[str], object] = print, keep: int | None = None) -> str | None:
    """Fold ROOT's log into a new base; return its generation, or None when
    another compaction or publish holds the root, or there is nothing to fold."""
    from . import publish
    from .merge import write_table
    from .table import open_table

    root = Path(root)
    t0 = time.perf_counter()
    with locked(root, PUBLISH_LOCK, blocking=False) as got:
        if not got:
            log(f"{root}: a publish, rollback or compaction is running; not compacting")
            return None
        head = Head(head_path(root))
        read = head.read()
        head.close()
        if read is None:
            return None
        st = read[1]
        if st.log_size <= HEADER_SIZE:
            log(f"{root}: no changes to fold into {st.base}")
            return None
        path = changelog.log_path(root, st.epoch)
        changes: dict = {}
        with open(path, "rb") as f:
            for g in changelog.read_groups(f.fileno(), HEADER_SIZE, st.log_size, path):
                for op, key, value in g.entries:
                    changes[key] = None if op == DELETE else value
        gens = publish.generations_dir(root)
        for leftover in [*gens.glob(".compact-*"), *gens.glob("..compact-*")]:  # of a compaction killed mid-way (we hold the lock)
            leftover.unlink(missing_ok=True)
        tmp = gens / f".compact-{os.getpid()}.kvt"
        with open_table(base_path(root, st.base)) as table:
            generation = write_table(
                tmp,
                merged_items(table, changes),
                st.kind,
                {"source": {"name": "(compaction)", "base": st.base, "log_epoch": st.epoch, "changes": st.changes}},
            )
        final = publish.generation_path(root, generation)
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
            changelog.fsync_dir(gens)
        built = time.perf_counter() - t0
        with locked(root, WRITE_LOCK):
            head = Head(head_path(root))
            now = head.read()
            head.close()
            if now is None or now[1].epoch != st.epoch:
                log(f"{root}: the root changed under the compaction; leaving it")
                return None
            end = now[1].log_size
            with open(path, "rb") as f:
                tail = os.pread(f.fileno(), end - st.log_size, st.log_size) if end > st.log_size else b""
            groups, used = changelog.decode_groups(tail)
            if used != len(tail):
                raise changelog.ChangeLogCorrupt(f"{path}: committed groups after offset {st.log_size} fail their checksums")
            switch_base(
                root, generation, st.kind, st.epoch, tail, sum(len(g.entries) for g in groups), max([now[1].seq] + [g.seq for g in groups])
            )
        history = publish.read_history(root)
        history = [g for g in history if g != generation] + [generation]
        publish._write_history(root, history)
        publish._prune(root, history, keep or publish.DEFAULT_KEEP, log)
        prune_logs(root)
        log(f"{root}: compacted {st.changes:,} changes on {st.base} into {generation} in {built:.2f} s ({len(groups)} writes carried over)")
        return generation


def rollback(root: str | os.PathLike, force: bool = False, log: Callable[[str], object] = print) -> str:
    """Return ROOT to the state before the last publish or compaction: the
    previous log's base and changes. Refuses, naming how many writes it would
    discard, unless `force`."""
    from . import publish
    from .publish import PublishError
    from .table import open_table

    root = Path(root)
    with locked(root, PUBLISH_LOCK), locked(root, WRITE_LOCK):
        head = Head(head_path(root))
        read = head.read()
        head.close()
        if read is None:
            raise PublishError(f"{root}/head is being rewritten; try again")
        st = read[1]
        current = changelog.log_path(root, st.epoch)
        header = changelog.read_header(current)
        with open(current, "rb") as f:
            groups = changelog.read_groups(f.fileno(), HEADER_SIZE, st.log_size, current)
        target, prev_prev, prev_groups, body = _first_that_verifies(root, _earlier_states(root, header.prev_epoch, st.base), st.base, log)
        path = base_path(root, target)
        last_prev = max([0] + [g.seq for g in prev_groups])
        discarded = sum(1 for g in groups if g.seq > last_prev)
        if discarded and not force:
            raise PublishError(
                f"rolling back {root} would discard {discarded} write{'s' if discarded != 1 else ''} "
                f"made since the last publish or compaction; pass --force to discard them"
            )
        with open_table(path) as t:
            kind = t.key_kind
        switch_base(root, target, kind, prev_prev, body, sum(len(g.entries) for g in prev_groups))
        history = publish.read_history(root)
        if target in history:  # the generations rolled back from leave the history
            history = history[: len(history) - history[::-1].index(target)]
        else:
            history.append(target)
        publish._write_history(root, history)
        n = sum(len(g.entries) for g in prev_groups)
        log(
            f"current -> {target} (rolled back from {st.base})"
            + (f" with the {n} changes written on it" if n else "")
            + (f"; discarded {discarded} writes" if discarded else "")
        )
        return target


def _first_that_verifies(root: Path, states: Iterator[State], current: str, log: Callable[[str], object]) -> State:
    """The first earlier state whose base table verifies; the others are named as skipped."""
    from . import publish

    for state in states:
        try:
            publish._verify(base_path(root, state[0]))
            return state
        except (KVError, ValueError, OSError) as e:
            log(f"skipping generation {state[0]}: {e}")
    raise publish.PublishError(f"{root}: no earlier generation to roll back to from {current}")


def _earlier_states(root: Path, epoch: int, current: str) -> Iterator[State]:
    """(base, its previous epoch, groups, their bytes) of each earlier state,
    newest first: the chain of logs, or for a root published before it had
    change logs, the generations of history.json (without changes)."""
    from .publish import PublishError, generations_dir, read_history

    if not (epoch and changelog.log_path(root, epoch).exists()):
        history = read_history(root)
        if not history or history[-1] != current:
            raise PublishError(
                f"{root}: current ({current}) is not the last entry of history.json, so the previous generation "
                f"is unknown; publish the one you want: kv publish {generations_dir(root)}/ID.kvt --root {root}"
            )
        for generation in reversed(history[:-1]):
            yield generation, 0, [], b""
        return
    while epoch:
        path = changelog.log_path(root, epoch)
        try:
            header, groups, end, _ = changelog.scan(path)
        except (OSError, KVError):
            return
        with open(path, "rb") as f:
            body = os.pread(f.fileno(), end - HEADER_SIZE, HEADER_SIZE)
        yield header.base, header.prev_epoch, groups, body
        epoch = header.prev_epoch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kv.compact", description=__doc__.splitlines()[0])
    parser.add_argument("root")
    args = parser.parse_args(argv)
    try:
        compact(args.root, log=lambda m: print(m, file=sys.stderr))
    except (KVError, OSError) as e:
        print(f"kv compact: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
