"""Build options: one frozen, self-validating value used by `kv build`,
`kv serve`, `kv publish`, sharded builds and build_table.py.

The flags are declared once, here (`BuildOptions.add_arguments`); a table
records `BuildOptions.recorded()` in its metadata, and `kv serve` compares a
table's record with the options it was asked for (`differences`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

ON_DUPLICATE = ("error", "first", "last")
LOAD_FACTOR_RANGE = (0.1, 0.95)
DEFAULT_LOAD_FACTOR = 0.8

_WORDS = {
    "skip_invalid": ("--skip-invalid", "skip malformed lines (reported) instead of stopping"),
    "on_duplicate": ("--on-duplicate", "what a key on two lines does: stop (error, the default), keep the first, or keep the last"),
    "strip_cr": ("--strip-cr", "remove the CR of CR LF line endings"),
    "keep_cr": ("--keep-cr", "keep a trailing CR as the last byte of the value"),
    "load_factor": ("--load-factor", f"records per home slot, {LOAD_FACTOR_RANGE[0]}-{LOAD_FACTOR_RANGE[1]} (default {DEFAULT_LOAD_FACTOR})"),
}


@dataclass(frozen=True)
class BuildOptions:
    """How a data file becomes a table. Invalid combinations raise ValueError
    with a message naming the flag."""

    skip_invalid: bool = False
    on_duplicate: str = "error"
    strip_cr: bool = False
    keep_cr: bool = False
    load_factor: float = DEFAULT_LOAD_FACTOR

    def __post_init__(self) -> None:
        if self.on_duplicate not in ON_DUPLICATE:
            raise ValueError(f"--on-duplicate must be one of {', '.join(ON_DUPLICATE)}, not {self.on_duplicate!r}")
        lo, hi = LOAD_FACTOR_RANGE
        if not (isinstance(self.load_factor, (int, float)) and lo <= self.load_factor <= hi):
            raise ValueError(f"--load-factor must be between {lo} and {hi}, not {self.load_factor}")
        if self.strip_cr and self.keep_cr:
            raise ValueError("--strip-cr and --keep-cr exclude each other")

    def recorded(self) -> dict:
        """What a table stores under meta["options"]."""
        return asdict(self)

    @classmethod
    def from_recorded(cls, recorded: dict) -> "BuildOptions":
        """The options a table was built with (unknown keys ignored, missing ones default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in recorded.items() if k in names})

    def differences(self, recorded: dict) -> list[str]:
        """Each option whose recorded value differs from this one, in words:
        ["--skip-invalid (table: on, asked: off)", ...]."""
        out = []
        for f in fields(self):
            mine = getattr(self, f.name)
            theirs = recorded.get(f.name, getattr(BuildOptions, f.name))
            if theirs != mine:
                out.append(f"{_WORDS[f.name][0]} (table: {_show(theirs)}, asked: {_show(mine)})")
        return out

    def flags(self) -> list[str]:
        """Command-line flags that reproduce these options (defaults omitted)."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v == f.default:
                continue
            flag = _WORDS[f.name][0]
            out += [flag] if v is True else [flag, str(v)]
        return out

    def is_default(self) -> bool:
        return self == BuildOptions()

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
        """Declare the build flags on `parser`. Defaults are None so a caller
        can tell "not given" from "given as the default" (`kv serve` reuses a
        table built with other options only when none was given)."""
        g = parser.add_argument_group("build options" + (f" ({prefix})" if prefix else ""))
        g.add_argument("--skip-invalid", action="store_true", default=None, help=_WORDS["skip_invalid"][1])
        g.add_argument("--on-duplicate", choices=ON_DUPLICATE, default=None, help=_WORDS["on_duplicate"][1])
        cr = g.add_mutually_exclusive_group()
        cr.add_argument("--strip-cr", action="store_true", default=None, help=_WORDS["strip_cr"][1])
        cr.add_argument("--keep-cr", action="store_true", default=None, help=_WORDS["keep_cr"][1])
        g.add_argument("--load-factor", type=_load_factor, default=None, metavar="F", help=_WORDS["load_factor"][1])

    @staticmethod
    def given(args: argparse.Namespace) -> dict:
        """The build flags given on the command line (name -> value)."""
        names = [f.name for f in fields(BuildOptions)]
        return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: "BuildOptions | None" = None) -> "BuildOptions":
        """Options from parsed flags; flags not given keep `base`'s values (default: the defaults)."""
        values = (base or cls()).recorded()
        values.update(cls.given(args))
        return cls(**values)


def _load_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    lo, hi = LOAD_FACTOR_RANGE
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, not {text}")
    return value


def _show(v: object) -> str:
    if v is True:
        return "on"
    if v is False:
        return "off"
    return str(v)
