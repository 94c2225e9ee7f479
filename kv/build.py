"""Build a table file from a data file of `UUID value` lines.

One streaming pass reads the input in blocks (kv/lines.py): numpy validates
every line and canonicalises keys a block at a time; Python only hashes (xxh3
has no vectorised form). The canonical lines are appended to the records
region as they come (kv/writer.py), so memory holds 20 bytes per record (hash,
ref, check) plus block buffers. Slots are then placed by sorting on the hash:
with a home slot that grows with the hash, linear probing becomes a running
maximum (kv/placement.py, docs/FORMAT.md), computed in numpy.

The writer never exposes a partial file: it writes `.NAME.tmp-PID` in the
target directory, fsyncs, renames, and fsyncs the directory.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from . import __version__
from . import format as fmt
from .lines import BLOCK, MAX_LINE, read_records
from .options import BuildOptions
from .report import BuildReport, Problem
from .writer import TableWriter, discard_temp

_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def default_table_path(data: str | os.PathLike) -> Path:
    p = Path(data)
    return p.with_suffix(".kvt") if p.suffix != ".kvt" else p.with_name(p.name + ".kvt")


def build_table(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    options: BuildOptions = BuildOptions(),
    *,
    progress: bool | None = None,
    block_size: int = BLOCK,
    **option_fields: Any,
) -> BuildReport:
    """Build the table for `data` at `out` (default: data's name with `.kvt`).

    Options may also be given field by field, `build_table(data,
    load_factor=0.5)`: shorthand for `options=BuildOptions(load_factor=0.5)`.
    Raises ValueError for invalid options and DataFormatError (or
    DuplicateKey) naming file, line and text on the first problem the options
    do not allow; nothing is written then.
    """
    if option_fields:
        options = dataclasses.replace(options, **option_fields)  # BuildOptions validates itself
    t0 = time.perf_counter()
    data = Path(data)
    options = options.for_data(data)  # --format from the file name when not given
    out = Path(out) if out is not None else default_table_path(data)
    st = os.stat(data)
    report = BuildReport(source=str(data), table=str(out), input_format=options.format)
    writer = None
    try:
        writer = TableWriter(out, capacity=record_capacity(st.st_size, options), key_kind=options.key_kind)
        skipped = read_records(data, report, options, writer.add, size=st.st_size, progress=progress, block_size=block_size)
        writer.finish(table_meta(data, st, options.recorded(), report), report, data, skipped, options)
    except BaseException as e:
        if writer is not None:
            writer.abort()
        else:  # stopped while the writer was being made: its file may exist already
            discard_temp(out)
        if isinstance(e, OSError) and e.filename is None and e.errno in _WRITE_ERRNOS:
            # Only writes fail so; name the table, not the input.
            raise OSError(e.errno, f"{e.strerror} (writing the table; nothing was left under that name)", str(out)) from e
        raise
    report.seconds = time.perf_counter() - t0
    return report


def table_meta(data: Path, st: os.stat_result, options: dict, report: BuildReport) -> dict:
    """The metadata a table records about its source and the read; the writer
    adds the counts it finds (duplicates, records, value bytes, layout)."""
    return {
        "format": fmt.KIND_VERSION["string" if "format" in options else "uuid"],
        "builder": f"kv {__version__}",
        "source": {"name": data.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "built_at": build_time(st),
        "options": options,
        "lines": report.lines,
        "skipped": report.skipped,
        "duplicates": 0,
    }


def record_capacity(size: int, options: BuildOptions) -> int:
    """At most how many records a data file of `size` bytes holds (arrays of
    this length are reserved, and the OS backs only the pages used)."""
    shortest = fmt.VALUE_AT + 1 if options.key_kind == "uuid" else 3  # "k\t\n"; a jsonl line is longer
    return size // shortest + 1


def build_time(st: os.stat_result) -> str:
    """The build timestamp, kept reproducible: SOURCE_DATE_EPOCH when set (the
    reproducible-builds.org convention), else the source file's mtime."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = int(epoch) if epoch and epoch.isdigit() else st.st_mtime_ns // 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def install_sigterm_cleanup() -> None:
    """Turn SIGTERM into SystemExit so a killed build removes its temp file."""

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


__all__ = [
    "BLOCK",
    "MAX_LINE",
    "BuildOptions",
    "BuildReport",
    "Problem",
    "build_table",
    "default_table_path",
    "install_sigterm_cleanup",
    "table_meta",
]
