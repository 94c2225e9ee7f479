"""Data updates the read-only way: publish a new generation, switch, roll back.

    ROOT/
      generations/<generation>.kvt   immutable tables, named by content checksum
      current -> generations/<id>.kvt   what `kv serve --root ROOT` serves
      history.json                   generation ids in publish order
      .lock                          serialises publishers

A table file is never modified in place: a worker maps it, and a file that
changed under a mapping would show it mixed bytes or kill it with SIGBUS when
truncated. Publishing writes a new file, verifies it completely, then replaces
the `current` symlink with rename(2), which is atomic: a reader opening
`current` gets the old table or the new one, never neither or a mix. Running
workers keep the table they mapped until a reload (SIGHUP) replaces them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import DataFormatError, TableCorrupt

DEFAULT_KEEP = 3


class PublishError(Exception):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def generations_dir(root: Path) -> Path:
    return root / "generations"


def current_generation(root: Path) -> str | None:
    link = root / "current"
    try:
        return Path(os.readlink(link)).stem
    except (FileNotFoundError, OSError):
        return None


def read_history(root: Path) -> list[str]:
    try:
        return json.loads((root / "history.json").read_text())["generations"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError) as e:
        raise PublishError(f"{root / 'history.json'} is damaged ({e}); fix or remove it") from None


def _write_history(root: Path, history: list[str]) -> None:
    tmp = root / f".history.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"generations": history}, indent=1) + "\n")
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, root / "history.json")


def _point_current(root: Path, generation: str) -> None:
    """Atomically make ROOT/current point at generations/<generation>.kvt."""
    tmp = root / f".current.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(f"generations/{generation}.kvt", tmp)
    os.replace(tmp, root / "current")
    _fsync_dir(root)


def _verify(path: Path) -> str:
    from .table import open_table

    with open_table(path) as t:
        t.verify()
        return t.generation


def publish(source: str | os.PathLike, root: str | os.PathLike, keep: int = DEFAULT_KEEP, log=print, **build_options) -> str:
    """Build (for a data file) or copy (for a table) into ROOT/generations,
    verify it completely, switch ROOT/current to it; return its generation."""
    from .serve import is_table

    source, root = Path(source), Path(root)
    if not source.is_file():
        raise PublishError(f"{source}: no such file")
    gens = generations_dir(root)
    with _locked(root):
        gens.mkdir(parents=True, exist_ok=True)
        incoming = gens / f".incoming-{os.getpid()}.kvt"
        try:
            if is_table(source):
                with open(source, "rb") as src, open(incoming, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            else:
                from .build import build_table

                report = build_table(source, incoming, **build_options)
                log(f"built {report.records:,} records from {source} in {report.seconds:.2f} s")
            try:
                generation = _verify(incoming)
            except (TableCorrupt, OSError) as e:
                raise PublishError(f"refusing to publish {source}: {e}") from None
            final = gens / f"{generation}.kvt"
            if final.exists():
                incoming.unlink()
            else:
                os.replace(incoming, final)
                _fsync_dir(gens)
        finally:
            incoming.unlink(missing_ok=True)
        log(f"verified generation {generation} ({final})")
        if current_generation(root) == generation:
            log(f"generation {generation} is already current; nothing to switch")
            return generation
        history = [g for g in read_history(root) if g != generation] + [generation]
        _write_history(root, history)
        _point_current(root, generation)
        log(f"current -> {generation}")
        _prune(root, history, keep, log)
        return generation


def rollback(root: str | os.PathLike, log=print) -> str:
    """Point ROOT/current at the generation published before the current one."""
    root = Path(root)
    with _locked(root):
        history = read_history(root)
        current = current_generation(root)
        if current not in history:
            raise PublishError(f"{root}: current generation {current} is not in history.json; nothing to roll back to")
        i = history.index(current)
        for previous in reversed(history[:i]):
            path = generations_dir(root) / f"{previous}.kvt"
            if not path.exists():
                continue
            try:
                _verify(path)
            except (TableCorrupt, OSError) as e:
                log(f"skipping generation {previous}: {e}")
                continue
            _point_current(root, previous)
            log(f"current -> {previous} (rolled back from {current})")
            return previous
        raise PublishError(f"{root}: no earlier generation to roll back to from {current}")


def _prune(root: Path, history: list[str], keep: int, log) -> None:
    """Delete generation files beyond the newest `keep` before the current one."""
    current = current_generation(root)
    older = [g for g in history if g != current]
    doomed = older[: max(0, len(older) - keep)]
    for g in doomed:
        path = generations_dir(root) / f"{g}.kvt"
        if path.exists():
            path.unlink()  # a worker still mapping it keeps its pages until it exits
            log(f"removed old generation {g}")
    if doomed:
        _write_history(root, [g for g in history if g not in doomed])


def pid_from(root: str | None, pid_file: str | None) -> int:
    candidates = [pid_file] if pid_file else []
    if root:
        candidates.append(os.path.join(root, "kv.pid"))
    if os.environ.get("RUNTIME_DIRECTORY"):
        candidates.append(os.path.join(os.environ["RUNTIME_DIRECTORY"], "kv.pid"))
    for c in candidates:
        try:
            return int(Path(c).read_text().strip())
        except FileNotFoundError:
            continue
        except ValueError:
            raise PublishError(f"{c} does not hold a pid") from None
    raise PublishError(
        f"no pid file found (looked at {', '.join(candidates) or 'nothing'}); pass --pid-file, "
        "or under systemd run `systemctl reload kv`"
    )


def reload(root: str | None = None, pid_file: str | None = None, log=print) -> int:
    """SIGHUP the gunicorn master: new workers map ROOT/current, old ones finish."""
    pid = pid_from(root, pid_file)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise PublishError(f"no process {pid}: the server is not running (stale pid file?)") from None
    log(f"sent SIGHUP to kv master {pid}: new workers start on the current generation")
    return pid


# -- CLI -----------------------------------------------------------------------------------


def add_publish_arguments(p):
    p.add_argument("source", metavar="DATA_OR_TABLE", help="data file to build, or a table to copy in")
    p.add_argument("--root", required=True, metavar="DIR", help="publish root (what kv serve --root serves)")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help=f"older generations to keep (default {DEFAULT_KEEP})")
    p.add_argument("--skip-invalid", action="store_true")
    p.add_argument("--on-duplicate", choices=["error", "first", "last"], default="error")
    p.add_argument("--strip-cr", action="store_true")
    p.add_argument("--reload", action="store_true", help="then SIGHUP the server (see kv reload)")
    p.add_argument("--pid-file", help="with --reload: the server's pid file")


def run_publish(args) -> int:
    log = lambda m: print(f"kv publish: {m}", file=sys.stderr)  # noqa: E731
    t0 = time.perf_counter()
    try:
        gen = publish(args.source, args.root, keep=args.keep, log=log, skip_invalid=args.skip_invalid,
                      on_duplicate=args.on_duplicate, strip_cr=args.strip_cr)
        if args.reload:
            reload(args.root, args.pid_file, log=log)
    except (PublishError, DataFormatError, OSError) as e:
        log(str(e))
        return 1
    print(gen)
    log(f"done in {time.perf_counter() - t0:.2f} s")
    return 0


def add_rollback_arguments(p):
    p.add_argument("--root", required=True, metavar="DIR")
    p.add_argument("--reload", action="store_true", help="then SIGHUP the server")
    p.add_argument("--pid-file")


def run_rollback(args) -> int:
    log = lambda m: print(f"kv rollback: {m}", file=sys.stderr)  # noqa: E731
    try:
        gen = rollback(args.root, log=log)
        if args.reload:
            reload(args.root, args.pid_file, log=log)
    except (PublishError, OSError) as e:
        log(str(e))
        return 1
    print(gen)
    return 0


def add_reload_arguments(p):
    p.add_argument("--root", metavar="DIR", help="publish root (its kv.pid is read)")
    p.add_argument("--pid-file", help="the server's pid file (kv serve --pid-file)")


def run_reload(args) -> int:
    try:
        reload(args.root, args.pid_file, log=lambda m: print(f"kv reload: {m}", file=sys.stderr))
    except PublishError as e:
        print(f"kv reload: {e}", file=sys.stderr)
        return 1
    return 0
