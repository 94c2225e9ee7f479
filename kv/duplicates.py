"""Keys on more than one line: found among equal hashes once the records are
sorted, and resolved by --on-duplicate (error, first, last).

Equal keys have equal hashes, and the sort keeps equal hashes in input order,
so each key's rows come together and in the order of its lines. Only rows in a
run of equal hashes have their keys read (`key_at`); the input lines that
messages name are looked up once, for all of them together (`lines_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from .errors import DuplicateKey
from .placement import equal_hash_runs
from .report import SAMPLE, BuildReport, Problem


class Occurrence(NamedTuple):
    """The `nth` (0-based) record of `key`, whose slot ref is `ref`."""

    ref: int
    key: bytes
    nth: int


KeyAt = Callable[[int], bytes]
LinesOf = Callable[[list[Occurrence]], list[int]]


def duplicate_groups(h64: np.ndarray, key_at: KeyAt) -> Iterator[tuple[bytes, list[int]]]:
    """(key, rows) for each key on more than one row, rows in input order."""
    for a, b in equal_hash_runs(h64):
        rows_of: dict[bytes, list[int]] = {}
        for row in range(a, b + 1):
            rows_of.setdefault(key_at(row), []).append(row)
        yield from ((key, rows) for key, rows in rows_of.items() if len(rows) > 1)


def resolve_duplicates(
    h64: np.ndarray, refs: np.ndarray, policy: str, key_at: KeyAt, lines_of: LinesOf, source: object, report: BuildReport
) -> np.ndarray | None:
    """The rows to keep (None: all of them). Under "error" raise DuplicateKey
    for the repeat that comes first in the file; else count the dropped rows
    in `report` and sample them."""
    groups = duplicate_groups(h64, key_at)
    if policy == "error":
        repeat = _first_repeat(groups, refs)
        if repeat is not None:
            first, second = lines_of(repeat)
            raise DuplicateKey(
                f"{source}:{second}: key {repeat[0].key.decode()} already appeared on line {first}; "
                "pass --on-duplicate=first or --on-duplicate=last to choose which value to keep"
            )
        return None
    drop: list[int] = []
    samples: list[tuple[Occurrence, Occurrence]] = []  # (dropped, kept)
    room = max(0, SAMPLE - len(report.duplicate_sample))
    for key, rows in groups:
        kept = 0 if policy == "first" else len(rows) - 1
        for nth, row in enumerate(rows):
            if nth != kept:
                drop.append(row)
                if len(samples) < room:
                    samples.append((Occurrence(int(refs[row]), key, nth), Occurrence(int(refs[rows[kept]]), key, kept)))
    report.duplicates += len(drop)
    _add_samples(samples, lines_of, policy, report)
    if not drop:
        return None
    keep = np.ones(len(h64), dtype=bool)
    keep[drop] = False
    return keep


def _first_repeat(groups: Iterator[tuple[bytes, list[int]]], refs: np.ndarray) -> list[Occurrence] | None:
    """The first two records of the key whose second record comes first in
    the file (refs grow with input order), or None."""
    best = None
    for key, rows in groups:
        if best is None or refs[rows[1]] < refs[best[1][1]]:
            best = (key, rows)
    if best is None:
        return None
    key, rows = best
    return [Occurrence(int(refs[rows[0]]), key, 0), Occurrence(int(refs[rows[1]]), key, 1)]


def _add_samples(samples: list[tuple[Occurrence, Occurrence]], lines_of: LinesOf, policy: str, report: BuildReport) -> None:
    if not samples:
        return
    lines = lines_of([o for pair in samples for o in pair])
    for (dropped, _), line, kline in zip(samples, lines[0::2], lines[1::2], strict=False):
        reason = f"key {dropped.key.decode()} also on line {kline}; kept line {kline} ({policy})"
        report.duplicate_sample.append(Problem(line, reason, ""))
