"""String keys through a real `kv serve` (gunicorn + uvicorn, real sockets):
keys that stress URLs and shells, by raw HTTP, the Python client and the
`kv get` command; and `kv inspect` / `kv verify` on string tables."""

from __future__ import annotations

import json
import socket
import subprocess

import httpx
import pytest
from reference_writer import reference_table
from serverutil import KV, running_server

from kv.cli import main
from kv.client import Client, key_path
from kv.keys import MAX_STRING_KEY

STRESS = {
    "/": b"slash",
    "a/b": b"a slash inside",
    "..": b"dot dot",
    "%": b"percent",
    "?": b"question",
    "#": b"hash",
    "+": b"plus",
    "a b": b"space",
    "tab\there": b"tab",
    "new\nline": b"newline",
    "back\\slash": b"backslash",
    "ключ": "значение".encode(),
    "🔑": b"emoji",
    "User:42": b"upper",
    "user:42": b"lower",
    "3479D894-3271-4935-88CF-A06F3CBB80A5": b"upper uuid",
    "-dash": b"dash",
    "k" * MAX_STRING_KEY: b"longest",
    "binary": b"\xff\x00\n",
}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("strserve") / "s.kvt"
    path.write_bytes(reference_table([(k.encode(), v) for k, v in STRESS.items()], kind="string", meta={"format": 2, "key_kind": "string"}))
    return path


@pytest.fixture(scope="module")
def server(table):
    with running_server(table, workers=1) as (url, _):
        yield url


def raw_get(url: str, target: bytes) -> tuple[int, bytes]:
    """One GET with the request target sent byte for byte (no client normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_every_stress_key_is_served_over_real_http(server):
    with httpx.Client(base_url=server, timeout=5) as c:
        for k, v in STRESS.items():
            r = c.get(key_path(k))
            assert r.status_code == 200 and r.content == v, k


def test_raw_targets_route_on_the_raw_path(server):
    assert raw_get(server, b"/v1/keys/a%2Fb") == (200, b"a slash inside")
    assert raw_get(server, b"/v1/keys/a/b") == (200, b"a slash inside")  # the rest of the path is the key
    assert raw_get(server, b"/v1/keys/%2E%2E") == (200, b"dot dot")
    assert raw_get(server, b"/v1/keys/+") == (200, b"plus")
    assert raw_get(server, b"/v1/keys/%FF")[0] == 400
    # Raw UTF-8 in a request target is not HTTP (RFC 9112 targets are ASCII):
    # the server's parser refuses it, so clients must percent-encode.
    assert raw_get(server, "/v1/keys/ключ".encode())[0] == 400
    assert raw_get(server, b"/v1/keys/%2E%2E?x=1") == (200, b"dot dot")  # the query is not part of the key


def test_a_1024_byte_key_fully_percent_encoded_is_served_over_real_http(server):
    assert raw_get(server, b"/v1/keys/" + b"%6B" * MAX_STRING_KEY) == (200, b"longest")
    assert raw_get(server, b"/v1/keys/" + b"%6B" * (MAX_STRING_KEY + 1))[0] == 400


def test_the_client_gets_every_stress_key_alone_and_in_one_batch(server):
    with Client(server) as c:
        for k, v in STRESS.items():
            assert c.get(k) == v, k
        assert c.get_many([*STRESS, "absent"]) == STRESS
        assert c.stats()["key_kind"] == "string"


def kv_get(server: str, *keys: str) -> subprocess.CompletedProcess:
    return subprocess.run([KV, "get", "--url", server, "--", *keys], capture_output=True, timeout=30)


def test_kv_get_takes_keys_with_spaces_slashes_dashes_and_non_ascii_from_the_shell(server):
    for k in ("a b", "a/b", "-dash", "ключ", "🔑", "%", "+", "..", "new\nline"):
        r = kv_get(server, k)
        assert r.returncode == 0 and r.stdout == STRESS[k], (k, r.stderr)


def test_kv_get_of_several_keys_prints_escaped_key_tab_value_lines(server):
    r = kv_get(server, "a b", "tab\there", "new\nline", "back\\slash", "absent")
    assert r.returncode == 1 and b"absent: not found" in r.stderr
    assert r.stdout.split(b"\n") == [b"a b\tspace", b"tab\\there\ttab", b"new\\nline\tnewline", b"back\\\\slash\tbackslash", b""]


def test_kv_get_help_says_how_keys_with_tabs_and_newlines_print():
    out = subprocess.run([KV, "get", "--help"], capture_output=True, text=True).stdout
    assert "TAB, newline" in out and "\\t" in out


def test_kv_inspect_names_the_key_kind(table, capsys):
    assert main(["inspect", str(table), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["key_kind"] == "string" and d["format_version"] == 2 and d["records"] == len(STRESS)
    assert main(["inspect", str(table)]) == 0
    assert "key_kind" in capsys.readouterr().out


def test_kv_verify_passes_a_string_table_and_fails_a_damaged_one(table, tmp_path, capsys):
    assert main(["verify", str(table)]) == 0
    bad = tmp_path / "bad.kvt"
    data = bytearray(table.read_bytes())
    data[4096 + 10] ^= 0xFF  # inside the records region
    bad.write_bytes(bytes(data))
    assert main(["verify", str(bad)]) == 1
    assert "CORRUPT" in capsys.readouterr().err
