"""Data updates the read-only way: publish a new generation, switch, roll back.

    ROOT/
      generations/<generation>.kvt   immutable tables, named by content checksum
      current -> generations/<id>.kvt   what `kv serve --root ROOT` serves
      history.json                   the generations served, oldest first; the
                                     last one is `current`, the one before it is
                                     what `kv rollback` returns to
      .lock                          serialises publishers

A table file is never modified in place: a worker maps it, and a file that
changed under a mapping would show it mixed bytes or kill it with SIGBUS when
truncated. Publishing writes a new file under a temporary name, fsyncs it,
verifies it completely, renames it to its final name, then, under
ROOT/.write.lock, writes an empty change log for it, replaces the `current`
symlink with rename(2), which is atomic (a reader opening `current` gets the
old table or the new one, never neither or a mix), and bumps ROOT/head.
Running workers compare its change counter on every request and switch to
the new table at their next one, without a reload (kv/live.py,
docs/WRITES.md); SIGHUP stays for new code or configuration. Deleting an old
generation's file does not disturb a worker still mapping it (the inode
lives until the last mapping goes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import KVError, TableCorrupt
from .options import BuildOptions
from .report import BuildReport, plural

DEFAULT_KEEP = 3  # generations kept besides `current` (kv publish --keep)
SYSTEMD_PID_FILE = "/run/kv/kv.pid"  # deploy/kv.service: RuntimeDirectory=kv, --pid-file
Log = Callable[[str], object]  # where progress lines go (print by default)


class PublishError(KVError):
    """A publish, rollback or reload that was refused; the message says why."""


# -- the publish root ------------------------------------------------------------------------


def generations_dir(root: Path) -> Path:
    return Path(root) / "generations"


def generation_path(root: Path, generation: str) -> Path:
    return generations_dir(root) / f"{generation}.kvt"


def current_generation(root: str | os.PathLike) -> str | None:
    """The generation ROOT/current points at (None when there is none)."""
    try:
        return Path(os.readlink(Path(root) / "current")).stem
    except OSError:
        return None


def read_history(root: str | os.PathLike) -> list[str]:
    """The generations served, oldest first; the last is the current one."""
    path = Path(root) / "history.json"
    try:
        history = json.loads(path.read_text())["generations"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as e:
        raise PublishError(f"{path} is damaged ({e}); fix it, or remove it to start a new history") from None
    if not isinstance(history, list) or not all(isinstance(g, str) for g in history):
        raise PublishError(f"{path} is damaged (generations is not a list of ids); fix or remove it")
    return history


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_history(root: Path, history: list[str], step: str = "writing the history") -> None:
    """Replace ROOT/history.json atomically. A PublishError naming the file
    and `step` when it cannot (a full disk); no temporary file remains."""
    tmp = root / f".history.json.tmp-{os.getpid()}"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(json.dumps({"generations": history}, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / "history.json")
        _fsync_dir(root)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PublishError(
            f"{step}: cannot write {root / 'history.json'} (via {tmp.name}): {e.strerror or e}; current is unchanged"
        ) from None


def _point_current(root: Path, generation: str) -> None:
    """Atomically make ROOT/current point at generations/<generation>.kvt:
    a new symlink under a temporary name, renamed over `current`."""
    tmp = root / f".current.tmp-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(f"generations/{generation}.kvt", tmp)  # relative: the root can move
        os.replace(tmp, root / "current")
        _fsync_dir(root)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PublishError(f"switching {root / 'current'} to generation {generation}: {e.strerror or e}") from None


def _make_dir(path: Path) -> None:
    """Create a directory the service's user can read (0755, whatever the umask)."""
    if not path.is_dir():
        path.mkdir(parents=True)
        os.chmod(path, 0o755)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One publisher at a time per root (readers never take the lock)."""
    _make_dir(root)
    with open(root / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _verify(path: Path) -> str:
    """Open and check the whole table; return its generation."""
    from .table import open_table

    with open_table(path) as t:
        t.verify()
        return t.generation


def is_table(path: Path) -> bool:
    from .format import MAGIC

    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _copy_in(source: Path, dest: Path) -> None:
    with open(source, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


# -- publish, rollback ------------------------------------------------------------------------


def publish(
    source: str | os.PathLike, root: str | os.PathLike, keep: int = DEFAULT_KEEP, log: Log = print, options: BuildOptions | None = None
) -> str:
    """Build (for a data file, with `options`, default the defaults) or copy
    (for a table) into ROOT/generations, verify it completely, switch
    ROOT/current to it; return its generation.

    Raises PublishError (corrupt table, bad root), DataFormatError (bad data
    file) or OSError; in every such case `current` is left as it was and no
    partial file remains."""
    if keep < 1:
        raise PublishError(f"--keep must be at least 1 (rollback needs the previous generation), not {keep}")
    source, root = Path(source), Path(root)
    if not source.is_file():
        raise PublishError(f"{source}: no such file")
    gens = generations_dir(root)
    with _locked(root):
        history = read_history(root)  # before any work: a damaged history stops us early
        before = list(history)
        _make_dir(gens)
        for leftover in [*gens.glob(".*incoming-*"), *root.glob(".history.json.tmp-*"), *root.glob(".current.tmp-*")]:
            leftover.unlink()  # of a publisher killed mid-way (we hold the lock)
            log(f"removed leftover {leftover.name} of an interrupted publish")
        incoming = gens / f".incoming-{os.getpid()}.kvt"
        try:
            if is_table(source):
                _copy_in(source, incoming)
                log(f"copied {source} ({incoming.stat().st_size:,} bytes)")
            else:
                report = _build(source, incoming, options or BuildOptions())
                log(f"built {plural(report.records, 'record')} from {source} in {report.seconds:.2f} s")
            t0 = time.perf_counter()
            try:
                generation = _verify(incoming)
            except (TableCorrupt, ValueError, OSError) as e:
                raise PublishError(f"refusing to publish {source}: {e}") from None
            log(f"verified generation {generation} in {time.perf_counter() - t0:.2f} s")
            os.chmod(incoming, 0o444)  # whatever the umask: the service's own user must read it; nobody writes it
            final = generation_path(root, generation)
            placed = False  # True when this publish put `final` there (and must remove it on failure)
            if final.exists() and _still_good(final, log):
                incoming.unlink()
            else:
                placed = not final.exists()
                os.replace(incoming, final)
                _fsync_dir(gens)
        finally:
            incoming.unlink(missing_ok=True)

        current = current_generation(root)
        pending = _pending_writes(root)
        if current == generation and not pending:
            log(f"generation {generation} is already current; nothing to switch")
            return generation
        if current and (not history or history[-1] != current):
            history = [g for g in history if g != current] + [current]  # made by hand: let rollback return to it
        history = [g for g in history if g != generation] + [generation]
        try:
            _write_history(root, history, step=f"recording generation {generation} in the history")
            try:
                _switch(root, generation)
            except PublishError:
                with contextlib.suppress(PublishError):
                    _write_history(root, before, step="restoring the history")
                raise
        except PublishError:
            if placed and current_generation(root) != generation:
                final.unlink(missing_ok=True)  # a table outside the history would never be pruned
                log(f"removed {final}: it never became current")
            raise
        log(
            f"current -> {generation}"
            + (f" (was {current})" if current else "")
            + (f"; {pending} change{'s' if pending != 1 else ''} written since {current} replaced" if pending else "")
        )
        _prune(root, history, keep, log)
        return generation


def _pending_writes(root: Path) -> int:
    """Changes written on top of the current base (ROOT/head; 0 without one)."""
    from .head import Head, HeadError, head_path

    try:
        head = Head(head_path(root))
    except (FileNotFoundError, HeadError):
        return 0
    try:
        read = head.read()
        return read[1].changes if read else 0
    finally:
        head.close()


def _switch(root: Path, generation: str) -> None:
    """Point `current` at `generation` with a new, empty change log and bump
    ROOT/head, under the writers' lock: running workers (read-only or
    writable) switch at their next request, and the writes made before are
    replaced (kv/writes.py)."""
    from . import changelog
    from .table import open_table
    from .writes import WRITE_LOCK, active_epoch, current_base, locked, switch_base

    with open_table(generation_path(root, generation)) as t:
        kind = t.key_kind
    with locked(root, WRITE_LOCK):
        base = current_base(root)
        prev = active_epoch(root, base) if base else None
        known = changelog.epochs(root)
        switch_base(root, generation, kind, prev if prev is not None else (known[-1] if known else 0))


def _build(data: Path, out: Path, options: BuildOptions) -> BuildReport:
    from .build import build_table

    return build_table(data, out, options)


def _still_good(path: Path, log: Log) -> bool:
    """An existing file of the same generation: keep it if it verifies (a
    worker may map it), else let the fresh copy replace it by rename."""
    try:
        _verify(path)
        return True
    except (TableCorrupt, ValueError, OSError) as e:
        log(f"replacing damaged {path}: {e}")
        return False


def rollback(root: str | os.PathLike, log: Log = print, force: bool = False) -> str:
    """Point ROOT/current back at the generation served before it, after
    verifying that one; the generation rolled back from leaves the history.
    On a root with change logs (kv/writes.py) it returns to the state before
    the last publish or compaction, writes included, and refuses to discard
    writes made since unless `force` (kv/compact.py)."""
    root = Path(root)
    from .head import head_path

    if head_path(root).exists():
        from .compact import rollback as rollback_state

        return rollback_state(root, force=force, log=log)
    with _locked(root):
        history = read_history(root)
        current = current_generation(root)
        if current is None:
            raise PublishError(f"{root}/current does not exist: nothing to roll back")
        if not history or history[-1] != current:
            raise PublishError(
                f"{root}: current ({current}) is not the last entry of history.json, so the previous generation "
                f"is unknown; publish the one you want: kv publish {generations_dir(root)}/ID.kvt --root {root}"
            )
        for i in range(len(history) - 2, -1, -1):
            previous = history[i]
            path = generation_path(root, previous)
            try:
                _verify(path)
            except (TableCorrupt, ValueError, OSError) as e:
                log(f"skipping generation {previous}: {e}")
                continue
            _write_history(root, history[: i + 1])
            _point_current(root, previous)
            log(f"current -> {previous} (rolled back from {current})")
            return previous
        raise PublishError(f"{root}: no earlier generation to roll back to from {current}")


def _prune(root: Path, history: list[str], keep: int, log: Log) -> None:
    """Keep `current` and the `keep` generations served before it; delete every
    other table in generations/ (older ones, and ones rolled back from)."""
    kept = history[-(keep + 1) :]
    for path in sorted(generations_dir(root).glob("*.kvt")):
        if path.name.startswith(".") or path.stem in kept:
            continue
        path.unlink()  # a worker still mapping it keeps its pages until it exits
        log(f"removed old generation {path.stem}")
    if kept != history:
        _write_history(root, kept)


# -- reload -----------------------------------------------------------------------------------


def find_pid_file(root: str | None, pid_file: str | None) -> Path:
    """The server's pid file: --pid-file, else the first that exists of
    ROOT/kv.pid, $RUNTIME_DIRECTORY/kv.pid and /run/kv/kv.pid."""
    if pid_file:
        if not os.path.exists(pid_file):
            raise PublishError(f"pid file {pid_file} does not exist: is the server running?")
        return Path(pid_file)
    candidates = []
    if root:
        candidates.append(os.path.join(root, "kv.pid"))
    if os.environ.get("RUNTIME_DIRECTORY"):
        candidates.append(os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "kv.pid"))
    candidates.append(SYSTEMD_PID_FILE)
    for c in candidates:
        if os.path.exists(c):
            return Path(c)
    raise PublishError(
        f"no pid file found (looked at {', '.join(candidates)}); is the server running? "
        "Pass the file `kv serve --pid-file` wrote with --pid-file, or under systemd run `systemctl reload kv`"
    )


def read_pid(path: Path) -> int:
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        raise PublishError(f"{path} does not hold a process id") from None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        raise PublishError(f"{path} names process {pid}, which is not running (stale pid file?)") from None
    except OSError:
        return pid  # /proc hidden from us: trust the file
    if b"kv" not in cmdline and b"gunicorn" not in cmdline:
        shown = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        raise PublishError(f"{path} names process {pid} ({shown}), which is not a kv server (stale pid file?)")
    return pid


def _children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d))
    return out


def reload(root: str | None = None, pid_file: str | None = None, log: Log = print, wait: float = 0.0) -> int:
    """SIGHUP the gunicorn master: new workers map ROOT/current, old ones
    finish their in-flight requests and exit. With wait > 0, wait (at most
    that many seconds) until none of the old workers is left."""
    if root is not None and os.path.lexists(Path(root) / "current"):
        problem = table_problem(str(Path(root) / "current"))
        if problem:  # the server would refuse it too; say so here, signal nothing
            raise PublishError(f"not reloading: {problem}; `kv rollback --root {root}` points current back")
    pid = read_pid(find_pid_file(root, pid_file))
    old = _children(pid) if wait > 0 else set()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise PublishError(f"no process {pid}: the server is not running (stale pid file?)") from None
    except PermissionError:
        raise PublishError(f"not allowed to signal process {pid}: run as the server's user or root") from None
    log(f"sent SIGHUP to kv master {pid}: new workers start on the current generation, old ones finish their requests")
    if wait > 0 and old:
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            now = _children(pid)
            if now and not (now & old):
                log(f"workers replaced in {time.monotonic() - t0:.1f} s: {sorted(old)} -> {sorted(now)}")
                return pid
            time.sleep(0.1)
        raise PublishError(f"old workers {sorted(_children(pid) & old)} still running after {wait:.0f} s")
    return pid


def table_problem(path: str) -> str | None:
    """Why the table at `path` cannot be served (O(1): header checks only), or
    None. `kv reload` and the server's SIGHUP handler both ask before a reload."""
    from .table import open_table

    try:
        open_table(path).close()
    except (OSError, TableCorrupt) as e:
        target = os.path.realpath(path)
        return str(e) + (f" ({path} points at {target})" if target != os.path.abspath(path) else "")
    return None
