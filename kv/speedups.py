"""The optional C speedups (kv/_speedups.c), or None.

The lookup and the builder's hashing each exist twice: in C, when the
extension was compiled at install time (any machine with a C compiler), and in
Python, which gives the same results more slowly. Set KV_PURE_PYTHON=1 to use
the Python paths even when the extension is present (tests run both).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType


def native() -> ModuleType | None:
    """The compiled kv._speedups module, or None when absent or disabled."""
    if os.environ.get("KV_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


def implementation() -> str:
    """'c' or 'python': which lookup and hashing code this process uses."""
    return "c" if native() is not None else "python"


def unquote_bytes() -> Callable[[bytes], bytes]:
    """Percent-decoding of a raw path segment: the C `unquote` when built,
    else urllib's `unquote_to_bytes` (same results; tests compare them)."""
    c = native()
    if c is not None and hasattr(c, "unquote"):
        return c.unquote  # type: ignore[no-any-return]
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes
