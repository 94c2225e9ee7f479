"""The `kv` command line. Each command is a module of kv/commands/ with the
same contract: `add_arguments(parser)`, `run(args) -> int` (an exit status of
kv/commands/exits.py), `EXITS` (the statuses it uses, listed in its --help)
and optionally `EXAMPLE`. The work itself lives in the engine modules
(kv/serve.py, kv/publish.py, kv/deploy.py, kv/build.py, kv/client.py), which a
command imports only when it runs: `kv --help`, `kv get` and `kv stats` load
neither numpy nor the server's packages."""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands.exits import Exit, epilog
from .errors import SettingError

# name: one-line help (the module is kv.commands.<name>)
COMMANDS = {
    "gen": "generate a random data file (UUID value lines, or key<TAB>value lines with --keys string)",
    "build": "build a table file from a data file",
    "verify": "check a table file completely (checksums, structure)",
    "inspect": "print a table's metadata and health",
    "serve": "serve a data file or table over HTTP (gunicorn + uvicorn workers)",
    "get": "look up one or more keys on a server",
    "set": "write keys on a writable server, atomically",
    "delete": "delete keys on a writable server, atomically",
    "stats": "print a server's statistics",
    "publish": "build, verify and atomically switch a root directory to a new table",
    "rollback": "switch a root directory back to the previous generation",
    "reload": "tell a running server to load the current generation (SIGHUP)",
    "deploy": "render deployment files (nginx front for shards)",
}


def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="kv",
        description="A read-only key-value server for immutable data: build a table, serve it, query it.",
        epilog="Run `kv COMMAND --help` for a command's options. Example: kv gen 10000 -o example.data && kv serve example.data",
    )
    parser.add_argument("--version", action="version", version=f"kv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        mod = importlib.import_module(f"kv.commands.{name}")
        exits = getattr(mod, "EXITS", None)
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=epilog(exits, getattr(mod, "EXAMPLE", "")) if exits else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return Exit.USAGE
    try:
        return int(args._run(args) or 0)
    except SettingError as e:  # a bad KV_* value: named, like a bad flag
        print(f"kv {args.command}: {e}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
