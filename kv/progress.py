"""The build's progress bar: tqdm on stderr when it is a terminal, else nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable

Update = Callable[[int | None], None]


def progress_bar(total: int, enabled: bool | None) -> Update:
    """A function to call with the bytes consumed so far, and with None at the
    end. `enabled=None` means: when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return lambda consumed: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="building", file=sys.stderr)
    done = [0]

    def update(consumed: int | None) -> None:
        if consumed is None:
            bar.close()
            return
        bar.update(consumed - done[0])
        done[0] = consumed

    return update
