"""`kv deploy nginx`: render the nginx front for sharded servers.

    kv deploy nginx --shards 2 --upstream 0=127.0.0.1:8001,127.0.0.1:8002 \
                               --upstream 1=127.0.0.1:8003,127.0.0.1:8004 \
                               -o deploy/nginx/kv.conf

nginx does the routing (a `map` from the key's first two hex digits to a
per-shard upstream); the replicas of a shard are that upstream's servers.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from string import Template

from .shard import check_shard_count, key_range


def shard_map(shards: int, upstreams: dict[int, list[str]]) -> dict:
    bits = shards.bit_length() - 1
    return {
        "shards": shards,
        "key_bits": bits,
        "rule": f"shard = first byte of the key (its first two hex digits) >> {8 - bits}",
        "batch_path": "/v1/shards/{index}/batch",
        "map": [
            {"index": i, "first_prefix": key_range(i, shards)[0], "last_prefix": key_range(i, shards)[1], "replicas": upstreams[i]}
            for i in range(shards)
        ],
    }


def render_nginx(
    shards: int,
    upstreams: dict[int, list[str]],
    *,
    listen: str = "127.0.0.1:8080",
    max_fails: int = 1,
    fail_timeout: str = "5s",
    keepalive: int = 32,
    keepalive_timeout: str = "4s",
    max_body: str = "256k",
    connect_timeout: str = "1s",
    read_timeout: str = "5s",
    command: str = "kv deploy nginx",
) -> str:
    check_shard_count(shards)
    missing = [i for i in range(shards) if not upstreams.get(i)]
    if missing:
        raise ValueError(f"no --upstream for shard(s) {', '.join(map(str, missing))}")
    extra = sorted(set(upstreams) - set(range(shards)))
    if extra:
        raise ValueError(f"--upstream names shard(s) {extra} but there are only {shards} shards (0-{shards - 1})")
    blocks = []
    for i in range(shards):
        servers = "\n".join(f"    server {addr} max_fails={max_fails} fail_timeout={fail_timeout};" for addr in upstreams[i])
        # Idle upstream connections close on nginx's side first (kv closes them
        # after --keepalive, 5 s by default): a request never lands on a
        # connection the server is closing, which would count as a failure.
        blocks.append(f"upstream kv_shard_{i} {{\n{servers}\n    keepalive {keepalive};\n"
                      f"    keepalive_timeout {keepalive_timeout};\n}}\n")
    bits = shards.bit_length() - 1
    entries = []
    for byte in range(256):
        shard = byte >> (8 - bits) if bits else 0
        entries.append(f"    {byte:02x} kv_shard_{shard};")  # nginx map strings ignore case
    smap = json.dumps(shard_map(shards, upstreams), separators=(",", ":"))
    template = Template(resources.files("kv").joinpath("templates/nginx.conf").read_text())
    return template.substitute(
        command=command,
        shards=shards,
        last_shard=shards - 1,
        bits=bits,
        upstreams="\n".join(blocks),
        map_entries="\n".join(entries),
        shard_entries="\n".join(f"    {i} kv_shard_{i};" for i in range(shards)),
        listen=listen,
        max_body=max_body,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tries=max(2, max(len(u) for u in upstreams.values())),
        next_upstream_timeout=read_timeout,
        shard_map_json=smap.replace("'", "\\'"),
    )


def parse_upstreams(specs: list[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for spec in specs:
        shard, sep, addrs = spec.partition("=")
        if not sep or not shard.isdigit() or not addrs:
            raise ValueError(f"--upstream {spec!r}: expected SHARD=HOST:PORT[,HOST:PORT...]")
        hosts = [a.strip() for a in addrs.split(",") if a.strip()]
        for h in hosts:
            host, _, port = h.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"--upstream {spec!r}: {h!r} is not HOST:PORT")
        out.setdefault(int(shard), []).extend(hosts)
    return out


def add_arguments(p):
    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    n = sub.add_parser("nginx", help="render the nginx front for sharded servers", description=__doc__,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    n.add_argument("--shards", type=int, required=True, help="number of shards (power of two, up to 256)")
    n.add_argument("--upstream", action="append", default=[], metavar="SHARD=HOST:PORT[,HOST:PORT...]",
                   help="the replicas serving one shard; repeat for every shard")
    n.add_argument("--listen", default="127.0.0.1:8080", help="address nginx listens on (default 127.0.0.1:8080)")
    n.add_argument("--max-fails", type=int, default=1, help="failures before a replica is skipped (default 1)")
    n.add_argument("--fail-timeout", default="5s", help="how long a failed replica is skipped (default 5s)")
    n.add_argument("-o", "--output", default="deploy/nginx/kv.conf", help="file to write ('-' for stdout)")


def run(args) -> int:
    try:
        ups = parse_upstreams(args.upstream)
        text = render_nginx(
            args.shards, ups, listen=args.listen, max_fails=args.max_fails, fail_timeout=args.fail_timeout,
            command="kv deploy nginx " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "kv deploy nginx",
        )
    except ValueError as e:
        print(f"kv deploy nginx: {e}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"wrote {out}: {args.shards} shards, {sum(len(v) for v in ups.values())} servers", file=sys.stderr)
    return 0
