"""Build options: one frozen, self-validating value used by `kv build`,
`kv serve`, `kv publish`, sharded builds and build_table.py.

The flags are declared once, here (`BuildOptions.add_arguments`); a table
records `BuildOptions.recorded()` in its metadata, and `kv serve` compares a
table's record with the options it was asked for (`differences`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, fields, replace

ON_DUPLICATE = ("error", "first", "last")
INPUT_FORMATS = ("uuid", "tsv", "jsonl")  # "auto": from the file name (.tsv, .jsonl), else uuid
LOAD_FACTOR_RANGE = (0.1, 0.95)
DEFAULT_LOAD_FACTOR = 0.8  # UUID tables
# String tables: their records are as long as their input lines, so the 16-byte
# slots are what makes a table larger than its input. At 0.9 a 1M-record table
# of `kv gen --keys string` data is under 1.3x its input (1.33x at 0.8) for
# lookups within noise of 0.8's (docs/BENCHMARKS.md).
DEFAULT_LOAD_FACTORS = {"uuid": DEFAULT_LOAD_FACTOR, "string": 0.9}

_WORDS = {
    "format": (
        "--format",
        "input format: uuid (`UUID value` lines), tsv (`key<TAB>value` lines) or jsonl "
        '(one {"key": ..., "value" or "value_base64": ...} object a line); '
        "default: from the file name (.tsv, .jsonl), else uuid",
    ),
    "skip_invalid": ("--skip-invalid", "skip malformed lines (reported) instead of stopping"),
    "on_duplicate": ("--on-duplicate", "what a key on two lines does: stop (error, the default), keep the first, or keep the last"),
    "strip_cr": ("--strip-cr", "remove the CR of CR LF line endings"),
    "keep_cr": ("--keep-cr", "keep a trailing CR as the last byte of the value"),
    "load_factor": (
        "--load-factor",
        f"records per home slot, {LOAD_FACTOR_RANGE[0]}-{LOAD_FACTOR_RANGE[1]} "
        f"(default {DEFAULT_LOAD_FACTORS['uuid']} for uuid input, {DEFAULT_LOAD_FACTORS['string']} for tsv and jsonl)",
    ),
}


@dataclass(frozen=True)
class BuildOptions:
    """How a data file becomes a table. Invalid combinations raise ValueError
    with a message naming the flag."""

    skip_invalid: bool = False
    on_duplicate: str = "error"
    strip_cr: bool = False
    keep_cr: bool = False
    load_factor: float | None = None  # None: the key kind's default (DEFAULT_LOAD_FACTORS), resolved by for_data
    format: str = "auto"

    def __post_init__(self) -> None:
        if self.format not in ("auto", *INPUT_FORMATS):
            raise ValueError(f"--format must be one of {', '.join(INPUT_FORMATS)}, not {self.format!r}")
        if self.on_duplicate not in ON_DUPLICATE:
            raise ValueError(f"--on-duplicate must be one of {', '.join(ON_DUPLICATE)}, not {self.on_duplicate!r}")
        lo, hi = LOAD_FACTOR_RANGE
        if self.load_factor is not None and not (isinstance(self.load_factor, (int, float)) and lo <= self.load_factor <= hi):
            raise ValueError(f"--load-factor must be between {lo} and {hi}, not {self.load_factor}")
        if self.strip_cr and self.keep_cr:
            raise ValueError("--strip-cr and --keep-cr exclude each other")

    def recorded(self) -> dict:
        """What a table stores under meta["options"]: the input format only
        for string keys (a UUID table's options are as before string keys
        existed, so its bytes are too). Resolve "auto" and the load factor
        first (`for_data`)."""
        out = asdict(self)
        if out["format"] in ("uuid", "auto"):
            del out["format"]
        return out

    def for_data(self, path: str | os.PathLike) -> BuildOptions:
        """These options with an "auto" format resolved from `path`'s name,
        and the load factor, when not given, the default of that key kind."""
        resolved = self
        if self.format == "auto":
            from .strlines import detect_format

            resolved = replace(self, format=detect_format(path))
        if resolved.load_factor is None:
            resolved = replace(resolved, load_factor=resolved.table_load_factor)
        return resolved

    @property
    def table_load_factor(self) -> float:
        """The load factor a build uses: the one given, else the key kind's default."""
        return DEFAULT_LOAD_FACTORS[self.key_kind] if self.load_factor is None else self.load_factor

    @property
    def key_kind(self) -> str:
        """ "uuid" or "string": the kind of table these options build (format resolved)."""
        return "uuid" if self.format in ("uuid", "auto") else "string"

    @classmethod
    def from_recorded(cls, recorded: dict) -> BuildOptions:
        """The options a table was built with (unknown keys ignored, missing ones
        default; a table that records no format was built from uuid lines)."""
        names = {f.name for f in fields(cls)}
        return cls(**{"format": "uuid", **{k: v for k, v in recorded.items() if k in names}})

    def differences(self, recorded: dict) -> list[str]:
        """Each option whose recorded value differs from this one, in words:
        ["--skip-invalid (table: on, asked: off)", ...]."""
        out = []
        for f in fields(self):
            mine = getattr(self, f.name)
            theirs = recorded.get(f.name, "uuid" if f.name == "format" else getattr(BuildOptions, f.name))
            if f.name == "format" and mine == "auto":
                continue  # from the file name: the same name gives the same format
            if f.name == "load_factor":  # not given (or not recorded): the default of the table's key kind
                kind_default = DEFAULT_LOAD_FACTORS[BuildOptions.from_recorded(recorded).key_kind]
                mine = kind_default if mine is None else mine
                theirs = kind_default if theirs is None else theirs
            if theirs != mine:
                out.append(f"{_WORDS[f.name][0]} (table: {_show(theirs)}, asked: {_show(mine)})")
        return out

    def flags(self) -> list[str]:
        """Command-line flags that reproduce these options (defaults omitted)."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v == f.default or (f.name == "format" and v in ("auto", "uuid")):
                continue
            if f.name == "load_factor" and v == DEFAULT_LOAD_FACTORS[self.key_kind]:
                continue  # the default of this key kind
            flag = _WORDS[f.name][0]
            out += [flag] if v is True else [flag, str(v)]
        return out

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
        """Declare the build flags on `parser`. Defaults are None so a caller
        can tell "not given" from "given as the default" (`kv serve` reuses a
        table built with other options only when none was given)."""
        g = parser.add_argument_group("build options" + (f" ({prefix})" if prefix else ""))
        g.add_argument("--format", choices=INPUT_FORMATS, default=None, help=_WORDS["format"][1])
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
    def from_args(cls, args: argparse.Namespace, base: BuildOptions | None = None) -> BuildOptions:
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
