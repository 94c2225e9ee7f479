"""The `kv` command line. Each subcommand lives in the module that does the
work: the module has `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

# name: (module, one-line help)
COMMANDS = {
    "gen": ("kv.commands.gen", "generate a random data file of UUID value lines"),
    "build": ("kv.commands.build", "build a table file from a data file"),
    "verify": ("kv.commands.verify", "check a table file completely (checksums, structure)"),
    "inspect": ("kv.commands.inspect", "print a table's metadata and health"),
    "serve": ("kv.serve", "serve a data file or table over HTTP (gunicorn + uvicorn workers)"),
    "get": ("kv.commands.get", "look up one or more keys on a server"),
    "stats": ("kv.commands.stats", "print a server's statistics"),
    "publish": ("kv.publish", "build, verify and atomically switch a root directory to a new table"),
    "rollback": ("kv.publish", "switch a root directory back to the previous generation"),
    "reload": ("kv.publish", "tell a running server to load the current generation (SIGHUP)"),
    "deploy": ("kv.deploy", "render deployment files (nginx front for shards)"),
}

EXIT_OK, EXIT_MISSING, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="kv",
        description="A read-only key-value server for immutable data: build a table, serve it, query it.",
        epilog="Run `kv COMMAND --help` for a command's options. Example: kv gen 10000 -o example.data && kv serve example.data",
    )
    parser.add_argument("--version", action="version", version=f"kv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("kv"):
                continue  # command not built yet
            raise
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        adder = getattr(mod, f"add_{name}_arguments", None) or mod.add_arguments
        adder(p)
        p.set_defaults(_run=getattr(mod, f"run_{name}", None) or mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args._run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
