"""kv deploy nginx: render the nginx front for sharded servers."""

from __future__ import annotations

import argparse
import sys

from .exits import Exit, epilog

EXITS = {Exit.OK: "written", Exit.FAILED: "cannot write the file", Exit.USAGE: "bad usage (shard count, --upstream)"}
DEFAULT_OUTPUT = "deploy/nginx/kv.conf"

NGINX_EXAMPLE = """\
example (two shards, two replicas each; this renders deploy/nginx/kv.conf):

  kv deploy nginx --shards 2 \\
      --upstream 0=127.0.0.1:8001,127.0.0.1:8002 \\
      --upstream 1=127.0.0.1:8003,127.0.0.1:8004 \\
      -o deploy/nginx/kv.conf

For UUID keys nginx does the routing (a `map` from the key's first two hex
digits to a per-shard upstream); the replicas of a shard are that upstream's
servers. For string keys (--keys string, tables built from tsv/jsonl) nginx
sends a key to any replica; one of another shard answers with an
X-Accel-Redirect to the key's shard, which nginx follows internally.
The file's first line names the command that rendered it: run that command
again (from the repository root) to regenerate it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import NGINX_BURST as DEFAULT_BURST
    from ..settings import NGINX_RATE as DEFAULT_RATE

    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    n = sub.add_parser(
        "nginx",
        help="render the nginx front for sharded servers",
        description="Render the nginx front for sharded servers.",
        epilog=f"{NGINX_EXAMPLE}\n\n{epilog(EXITS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    n.add_argument("--shards", type=int, required=True, help="number of shards (power of two, up to 256)")
    n.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="SHARD=HOST:PORT[,HOST:PORT...]",
        help="the replicas serving one shard; repeat for every shard",
    )
    n.add_argument(
        "--keys",
        choices=("uuid", "string"),
        default="uuid",
        help="the tables' key kind (`kv inspect TABLE` says): uuid keys route in nginx by their first hex "
        "digits; string keys go to any shard, which redirects to the key's shard (default uuid)",
    )
    n.add_argument("--listen", default="127.0.0.1:8080", help="address nginx listens on (default 127.0.0.1:8080)")
    n.add_argument("--max-fails", type=int, default=1, help="failures before a replica is skipped (default 1)")
    n.add_argument("--fail-timeout", default="5s", help="how long a failed replica is skipped (default 5s)")
    n.add_argument("--certfile", metavar="FILE", help="terminate TLS in nginx with this certificate (needs --keyfile)")
    n.add_argument("--keyfile", metavar="FILE", help="the private key of --certfile")
    n.add_argument(
        "--rate",
        type=int,
        default=DEFAULT_RATE,
        metavar="N",
        help=f"requests/s each client address may send (nginx limit_req; over it: 429; 0: no limit; default {DEFAULT_RATE})",
    )
    n.add_argument(
        "--burst",
        type=int,
        default=DEFAULT_BURST,
        metavar="N",
        help=f"requests over --rate a client may send at once (default {DEFAULT_BURST})",
    )
    n.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"file to write ('-' for stdout; default {DEFAULT_OUTPUT})")


def run(args: argparse.Namespace) -> int:
    from ..deploy import command_line, parse_upstreams, render_nginx, write_config

    try:
        ups = parse_upstreams(args.upstream)
        front = {  # the front's options, as rendered and as named in the command that renders it
            "listen": args.listen,
            "max_fails": args.max_fails,
            "fail_timeout": args.fail_timeout,
            "keys": args.keys,
            "certfile": args.certfile,
            "keyfile": args.keyfile,
            "rate": args.rate,
            "burst": args.burst,
        }
        command = command_line(args.shards, ups, output=args.output, **front)
        text = render_nginx(args.shards, ups, command=command, **front)
    except ValueError as e:
        print(f"kv deploy nginx: {e}", file=sys.stderr)
        return Exit.USAGE
    if args.output == "-":
        sys.stdout.write(text)
        return Exit.OK
    try:
        out = write_config(text, args.output)
    except OSError as e:
        print(f"kv deploy nginx: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return Exit.FAILED
    print(f"wrote {out}: {args.shards} shards, {sum(len(v) for v in ups.values())} servers", file=sys.stderr)
    return Exit.OK
