"""The nginx front for sharded servers, as `kv deploy nginx` renders it
(kv/commands/deploy.py); the replicas of a shard are that shard's upstream's
servers. The file's header names the command that rendered it.

UUID keys: nginx does the routing, a `map` from the key's first two hex
digits to the shard's upstream.

String keys (`--keys string`): a key's shard is the low bits of its xxh3
hash, which nginx cannot compute. So nginx sends a key request to any replica
of any shard (round robin over all of them); a server that does not hold the
key answers 421 with `X-Accel-Redirect: /_kv_shard/{index}`
(kv.keys.SHARD_REDIRECT), which nginx follows internally to an
`internal` location that proxies the client's original request URI
($request_uri, byte for byte) to that shard's upstream. One extra hop for
the keys that land on the wrong shard ((N-1)/N of them), no client change.
Batches: the client splits them by shard from GET /v1/shards, whose
`key_kind` says how to compute a key's shard.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from string import Template

from .keys import SHARD_REDIRECT
from .settings import NGINX_BURST, NGINX_RATE
from .shard import check_shard_count, key_range

KEY_KINDS = ("uuid", "string")
DEFAULT_RATE = NGINX_RATE  # per-client limit_req of the front (kv/settings.py says why)
DEFAULT_BURST = NGINX_BURST


def shard_map(shards: int, upstreams: dict[int, list[str]], keys: str = "uuid") -> dict:
    bits = shards.bit_length() - 1
    if keys == "string":
        return {
            "shards": shards,
            "key_kind": "string",
            "key_bits": bits,
            "rule": f"shard = xxh3_64(UTF-8 bytes of the key) & {shards - 1} (kv.keys.string_shard_of)",
            "batch_path": "/v1/shards/{index}/batch",
            "map": [{"index": i, "replicas": upstreams[i]} for i in range(shards)],
        }
    return {
        "key_kind": "uuid",
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
    keys: str = "uuid",
) -> str:
    check_shard_count(shards)
    if keys not in KEY_KINDS:
        raise ValueError(f"--keys {keys!r}: expected one of {', '.join(KEY_KINDS)}")
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
        blocks.append(f"upstream kv_shard_{i} {{\n{servers}\n    keepalive {keepalive};\n    keepalive_timeout {keepalive_timeout};\n}}\n")
    bits = shards.bit_length() - 1
    if keys == "string":
        routing = _string_routing(shards, upstreams, max_fails, fail_timeout, keepalive, keepalive_timeout)
    else:
        routing = _uuid_routing(shards, bits)
    smap = json.dumps(shard_map(shards, upstreams, keys), separators=(",", ":"))
    template = Template(resources.files("kv").joinpath("templates/nginx.conf").read_text())
    return template.substitute(
        command=command,
        shards=shards,
        last_shard=shards - 1,
        upstreams="\n".join(blocks),
        **routing,
        shard_entries="\n".join(f"    {i} kv_shard_{i};" for i in range(shards)),
        listen=listen,
        listen_line=f"{listen} ssl" if certfile else listen,
        tls=(
            f"    # TLS ends here; the shards behind are on a private network or loopback.\n"
            f"    ssl_certificate {certfile};\n    ssl_certificate_key {keyfile};\n"
            f"    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:kv_tls:10m;\n"
        )
        if certfile
        else "",
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


def _uuid_routing(shards: int, bits: int) -> dict[str, str]:
    entries = []
    for byte in range(256):
        shard = byte >> (8 - bits) if bits else 0
        entries.append(f"    {byte:02x} kv_shard_{shard};")  # nginx map strings ignore case
    return {
        "routing_comment": (
            f"# Keys route by their first two hex digits: shard i of {shards} holds the keys\n"
            f"# whose first byte's leading {bits} bits equal i (see docs/OPERATIONS.md, Scale-out)."
        ),
        "key_maps": (
            "# First two hex digits of the key (either case) -> that shard's upstream.\n"
            "map $kv_prefix $kv_upstream {\n"
            "    default kv_shard_0;  # not a key: any shard answers 400 with the reason\n" + "\n".join(entries) + "\n}"
        ),
        "key_locations": '    location ~ "^/v1/keys/(?<kv_prefix>[0-9a-fA-F]{2})" {\n        proxy_pass http://$kv_upstream;\n    }',
    }


def _string_routing(
    shards: int, upstreams: dict[int, list[str]], max_fails: int, fail_timeout: str, keepalive: int, keepalive_timeout: str
) -> dict[str, str]:
    everyone = [a for i in range(shards) for a in upstreams[i]]
    servers = "\n".join(f"    server {a} max_fails={max_fails} fail_timeout={fail_timeout};" for a in dict.fromkeys(everyone))
    redirect = SHARD_REDIRECT.replace("{index}", "(?<kv_redirect_index>[0-9]+)")
    return {
        "routing_comment": (
            f"# String keys: a key's shard (of {shards}) is the low bits of its xxh3 hash, which\n"
            "# nginx cannot compute. A key request goes to any replica of any shard\n"
            "# (kv_any, round robin); a server that does not hold the key answers 421\n"
            f"# with X-Accel-Redirect: {SHARD_REDIRECT}, which nginx follows internally to\n"
            "# that shard's upstream with the client's request URI unchanged: one extra hop."
        ),
        "key_maps": (
            f"upstream kv_any {{\n{servers}\n    keepalive {keepalive};\n    keepalive_timeout {keepalive_timeout};\n}}\n\n"
            "# Shard index in a server's X-Accel-Redirect -> that shard's upstream; \"\" for none.\n"
            'map $kv_redirect_index $kv_redirect_upstream {\n    default "";\n'
            + "\n".join(f"    {i} kv_shard_{i};" for i in range(shards))
            + "\n}"
        ),
        "key_locations": (
            "    location /v1/keys/ {\n"
            "        proxy_pass http://kv_any;\n"
            "    }\n\n"
            "    # Followed only from a server's X-Accel-Redirect, never from outside.\n"
            f'    location ~ "^{redirect}$" {{\n'
            "        internal;\n"
            "        default_type application/problem+json;\n"
            '        if ($kv_redirect_upstream = "") {\n'
            '            return 502 \'{"type":"about:blank","title":"Bad gateway","status":502,'
            '"detail":"a server redirected to a shard this front does not know; are the tables and the front of one deployment?"}\';\n'
            "        }\n"
            "        proxy_pass http://$kv_redirect_upstream$request_uri;\n"
            "    }"
        ),
    }


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


def command_line(
    shards: int,
    upstreams: dict[int, list[str]],
    *,
    listen: str = "127.0.0.1:8080",
    max_fails: int = 1,
    fail_timeout: str = "5s",
    output: str = "-",
    keys: str = "uuid",
    certfile: str | None = None,
    keyfile: str | None = None,
    rate: int = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
) -> str:
    """The `kv deploy nginx` command that renders this front (written into the
    file's header so that running it again regenerates the file)."""
    parts = ["kv deploy nginx", f"--shards {shards}"]
    if keys != "uuid":
        parts.append(f"--keys {keys}")
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
