"""The nginx front for sharded servers, as `kv deploy nginx` renders it
(kv/commands/deploy.py): nginx does the routing (a `map` from the key's first
two hex digits to a per-shard upstream); the replicas of a shard are that
upstream's servers. The file's header names the command that rendered it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from string import Template

from .settings import NGINX_BURST, NGINX_RATE
from .shard import check_shard_count, key_range

DEFAULT_RATE = NGINX_RATE  # per-client limit_req of the front (kv/settings.py says why)
DEFAULT_BURST = NGINX_BURST


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
    certfile: str | None = None,
    keyfile: str | None = None,
    rate: int = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
    command: str = "kv deploy nginx",
) -> str:
    check_shard_count(shards)
    if bool(certfile) != bool(keyfile):
        raise ValueError("TLS needs both --certfile and --keyfile")
    if rate < 0 or burst < 0:
        raise ValueError("--rate and --burst must be 0 or more")
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
        listen_line=f"{listen} ssl" if certfile else listen,
        tls=(f"    # TLS ends here; the shards behind are on a private network or loopback.\n"
             f"    ssl_certificate {certfile};\n    ssl_certificate_key {keyfile};\n"
             f"    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:kv_tls:10m;\n") if certfile else "",
        rate_doc=f"{rate} requests/s per client address, bursts of {burst}" if rate else "off: --rate 0",
        limit_zone=f"limit_req_zone $binary_remote_addr zone=kv_per_client:10m rate={rate}r/s;" if rate else "",
        limit_req=f"limit_req zone=kv_per_client burst={burst} nodelay;" if rate else "# limit_req off (--rate 0)",
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


def command_line(shards: int, upstreams: dict[int, list[str]], *, listen: str = "127.0.0.1:8080", max_fails: int = 1,
                 fail_timeout: str = "5s", output: str = "-", certfile: str | None = None, keyfile: str | None = None,
                 rate: int = DEFAULT_RATE, burst: int = DEFAULT_BURST) -> str:
    """The `kv deploy nginx` command that renders this front (written into the
    file's header so that running it again regenerates the file)."""
    parts = ["kv deploy nginx", f"--shards {shards}"]
    parts += [f"--upstream {i}={','.join(upstreams[i])}" for i in sorted(upstreams)]
    if listen != "127.0.0.1:8080":
        parts.append(f"--listen {listen}")
    if max_fails != 1:
        parts.append(f"--max-fails {max_fails}")
    if fail_timeout != "5s":
        parts.append(f"--fail-timeout {fail_timeout}")
    if certfile:
        parts.append(f"--certfile {certfile} --keyfile {keyfile}")
    if rate != DEFAULT_RATE:
        parts.append(f"--rate {rate}")
    if burst != DEFAULT_BURST:
        parts.append(f"--burst {burst}")
    if output != "-":
        parts.append(f"-o {output}")
    return " ".join(parts)


def write_config(text: str, output: str | Path) -> Path:
    """Write `text` to `output` under a temporary name, then rename it into place."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out
