"""Issue 15: TLS, mutual TLS and read tokens against the real server;
certificates made at test time with the openssl CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from serverutil import KV, running_server, stop

from kv.client import Client, ServerError, ServerUnreachable

TOKEN = "s3cret-read-token-0001"
OTHER = "another-read-token-0002"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem; server.pem/server.key for 127.0.0.1 and localhost; client.pem/client.key;
    rogue-ca.pem and rogue-client.pem/key (a client certificate from another CA)."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=kv test {ca}",
            cwd=d,
        )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca, ext in (("server", "ca", ["-extfile", "san.ext"]), ("client", "ca", []), ("rogue-client", "rogue-ca", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            *ext,
            cwd=d,
        )
    return d


def token_file(path: Path, *tokens: str, mode: int = 0o600) -> Path:
    path.write_text("# read tokens\n\n" + "".join(f"{t}\n" for t in tokens))
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def tls_server(gen_table, pki):
    table, records = gen_table
    with running_server(table, "--certfile", pki / "server.pem", "--keyfile", pki / "server.key", https=True, cacert=pki / "ca.pem") as (
        url,
        proc,
    ):
        yield url, records


# -- TLS ---------------------------------------------------------------------------------


def test_https_answers_curl_and_the_python_client(tls_server, pki):
    url, records = tls_server
    k, v = records[0]
    r = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), f"{url}/v1/keys/{k}"], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == v
    with Client(url, cacert=str(pki / "ca.pem")) as c:
        assert c.get(k) == v


def test_plain_http_to_the_tls_port_is_refused(tls_server):
    url, _ = tls_server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)


def test_a_certificate_that_does_not_verify_is_one_line_and_exit_3(tls_server, pki):
    url, records = tls_server
    r = subprocess.run([KV, "get", records[0][0], "--url", url], capture_output=True, text=True, timeout=30)
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and "does not verify" in r.stderr and "--cacert" in r.stderr, r.stderr
    r = subprocess.run(
        [KV, "get", records[0][0], "--url", url, "--cacert", str(pki / "rogue-ca.pem")], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 3 and r.stderr.count("\n") == 1
    r = subprocess.run(
        [KV, "get", records[0][0]], capture_output=True, timeout=30, env=dict(os.environ, KV_URL=url, KV_CACERT=str(pki / "ca.pem"))
    )
    assert r.returncode == 0 and r.stdout == records[0][1]


def test_mutual_tls_accepts_a_client_certificate_and_refuses_none_or_a_foreign_one(gen_table, pki):
    table, records = gen_table
    k, v = records[1]
    with running_server(
        table,
        "--certfile",
        pki / "server.pem",
        "--keyfile",
        pki / "server.key",
        "--ca-certs",
        pki / "ca.pem",
        https=True,
        cacert=pki / "ca.pem",
        client_cert=(pki / "client.pem", pki / "client.key"),
    ) as (url, proc):
        with Client(url, cacert=str(pki / "ca.pem"), cert=str(pki / "client.pem"), key=str(pki / "client.key")) as c:
            assert c.get(k) == v
        for cert in (None, (pki / "rogue-client.pem", pki / "rogue-client.key")):
            with pytest.raises(ServerUnreachable):
                with Client(
                    url, cacert=str(pki / "ca.pem"), retries=0, **({"cert": str(cert[0]), "key": str(cert[1])} if cert else {})
                ) as c:
                    c.get(k)
        r = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), f"{url}/healthz"], capture_output=True, timeout=30)
        assert r.returncode != 0


def test_tls_settings_are_checked_before_serving(gen_table, pki, tmp_path):
    table, _ = gen_table
    port = free_port()
    cases = [
        (["--certfile", str(pki / "server.pem")], "both --certfile and --keyfile"),
        (["--ca-certs", str(pki / "ca.pem")], "needs --certfile and --keyfile"),
        (["--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "client.key")], "cannot serve TLS"),
        (["--certfile", str(tmp_path / "nope.pem"), "--keyfile", str(pki / "server.key")], "no such file"),
    ]
    for args, words in cases:
        r = subprocess.run([KV, "serve", str(table), "--bind", f"127.0.0.1:{port}", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)


# -- read tokens -------------------------------------------------------------------------

ROUTES = ["/v1/keys/{k}", "/v1/stats", "/metrics", "/docs", "/openapi.json", "/no-such-route"]


@pytest.fixture(scope="module")
def token_server(gen_table, tmp_path_factory):
    table, records = gen_table
    d = tmp_path_factory.mktemp("tokens")
    tokens = token_file(d / "tokens", TOKEN)
    with running_server(table, "--read-token-file", tokens, log_level="debug") as (url, proc):
        yield url, proc, records, tokens


def test_tokens_401_without_403_wrong_200_right_on_every_route(token_server):
    url, _, records, _ = token_server
    k = records[0][0]
    with httpx.Client(base_url=url, timeout=5) as c:
        for route in ROUTES:
            path = route.format(k=k)
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"] == "application/problem+json" and r.json()["status"] == 401
            r = c.get(path, headers={"authorization": "Bearer wrong-token-xyz"})
            assert r.status_code == 403 and r.json()["status"] == 403, path
            assert "wrong-token-xyz" not in r.text
            r = c.get(path, headers={"authorization": "Basic " + TOKEN})
            assert r.status_code == 401, path
            r = c.get(path, headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == (404 if route == "/no-such-route" else 200), path
            assert TOKEN not in r.text
        for method, path in (("HEAD", f"/v1/keys/{k}"), ("POST", "/v1/batch")):
            assert c.request(method, path, json={"keys": [k]}).status_code == 401
            assert c.request(method, path, json={"keys": [k]}, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_tokens_leave_healthz_and_readyz_open(token_server):
    url = token_server[0]
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/readyz").status_code == 200


def test_the_fast_path_serves_a_token_holder_and_refuses_others(token_server):
    url, _, records, _ = token_server
    k, v = records[2]
    r = httpx.get(f"{url}/v1/keys/{k}", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.content == v
    # the same request the fast path answers, one token byte off
    r = httpx.get(f"{url}/v1/keys/{k}", headers={"authorization": f"Bearer {TOKEN[:-1]}X"})
    assert r.status_code == 403


def test_two_authorization_headers_are_a_400_in_either_order_on_every_path(token_server):
    """A singleton field (RFC 9110, 11.6.2): the fast path once read the last
    header and the checked path the first, so one wrong and one right token
    got 200 for a hit and 403 for a miss."""
    url, _, records, _ = token_server
    k = records[3][0]
    right, wrong = f"Bearer {TOKEN}", "Bearer wrong-token-xyz"
    with httpx.Client(base_url=url, timeout=5) as c:
        for path in (f"/v1/keys/{k}", "/v1/keys/00000000-0000-4000-8000-000000000000", "/v1/stats"):
            for pair in ((right, wrong), (wrong, right), (right, right)):
                r = c.get(path, headers=httpx.Headers([("authorization", pair[0]), ("authorization", pair[1])]))
                assert r.status_code == 400, (path, pair)
                assert r.json()["detail"].startswith("more than one Authorization header") and TOKEN not in r.text
        assert c.get(f"/v1/keys/{k}", headers={"authorization": right}).status_code == 200  # one is fine


def test_the_client_and_cli_send_the_token(token_server):
    url, _, records, _ = token_server
    k, v = records[3]
    with Client(url, token=TOKEN) as c:
        assert c.get(k) == v and c.get_many([k]) == {k: v} and c.stats()["lookups"] >= 1
    with Client(url) as c, pytest.raises(ServerError) as e:
        c.get(k)
    assert e.value.status == 401
    r = subprocess.run([KV, "get", k, "--url", url], capture_output=True, env=dict(os.environ, KV_TOKEN=TOKEN), timeout=30)
    assert r.returncode == 0 and r.stdout == v
    r = subprocess.run([KV, "stats", "--url", url, "--token", TOKEN], capture_output=True, timeout=30)
    assert r.returncode == 0


def test_the_cli_without_an_accepted_token_exits_4_refused(token_server):
    """The same status as kv set and kv delete when a write is refused (kv/commands/exits.py)."""
    url, _, records, _ = token_server
    env = {k: v for k, v in os.environ.items() if k != "KV_TOKEN"}
    for argv, token in ((["get", records[3][0]], None), (["get", records[3][0]], "wrong-token-xyz"), (["stats"], None)):
        extra = ["--token", token] if token else []
        r = subprocess.run([KV, *argv, "--url", url, *extra], capture_output=True, env=env, timeout=30)
        assert r.returncode == 4, (argv, token, r.stderr)
        assert b"401" in r.stderr or b"403" in r.stderr


def test_tokens_never_reach_the_log(token_server):
    url, proc, records, _ = token_server
    with httpx.Client(base_url=url) as c:
        c.get(f"/v1/keys/{records[0][0]}", headers={"authorization": f"Bearer {TOKEN}"})
        c.get("/v1/keys/nope", headers={"authorization": "Bearer leaked-guess-123"})
    os.killpg(proc.pid, signal.SIGHUP)  # a reload logs at debug level too
    time.sleep(2)
    stop(proc)
    log = proc.stdout.read().decode(errors="replace")
    assert "read tokens: 1 from" in log
    assert TOKEN not in log and "leaked-guess-123" not in log


def test_a_token_file_readable_by_others_gets_a_warning(gen_table, tmp_path):
    table, _ = gen_table
    tokens = token_file(tmp_path / "tokens", TOKEN, mode=0o644)
    with running_server(table, "--read-token-file", tokens, workers=1, log_level="info") as (url, proc):
        pass
    out = proc.stdout.read().decode()
    assert "readable by every user" in out and TOKEN not in out


def test_a_bad_or_empty_token_file_stops_kv_serve_without_echoing_it(gen_table, tmp_path):
    table, _ = gen_table
    port = free_port()
    for text, words in (("# only a comment\n", "holds no token"), ("short\n", "line 1"), ("has a space in it\n", "line 1")):
        f = tmp_path / "t"
        f.write_text(text)
        f.chmod(0o600)
        r = subprocess.run(
            [KV, "serve", str(table), "--bind", f"127.0.0.1:{port}", "--read-token-file", str(f)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1 and words in r.stderr and "space in" not in r.stderr and "short" not in r.stderr


def test_sighup_picks_up_a_new_token_file_without_a_failed_request(gen_table, tmp_path):
    """Rotation: add the new token, reload, move clients, drop the old one, reload."""
    table, records = gen_table
    k, v = records[4]
    tokens = token_file(tmp_path / "tokens", TOKEN)
    with running_server(table, "--read-token-file", tokens, workers=2) as (url, proc):
        failures, done = [], threading.Event()
        current = [TOKEN]

        def load():
            with httpx.Client(base_url=url, timeout=5) as c:
                while not done.is_set():
                    token = current[0]
                    r = c.get(f"/v1/keys/{k}", headers={"authorization": f"Bearer {token}"})
                    if r.status_code != 200:
                        failures.append((token, r.status_code))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            token_file(tokens, TOKEN, OTHER)
            os.kill(proc.pid, signal.SIGHUP)
            _until(
                lambda: all(
                    httpx.get(f"{url}/v1/keys/{k}", headers={"authorization": f"Bearer {OTHER}"}).status_code == 200 for _ in range(20)
                )
            )
            current[0] = OTHER
            token_file(tokens, OTHER)
            os.kill(proc.pid, signal.SIGHUP)
            _until(
                lambda: all(
                    httpx.get(f"{url}/v1/keys/{k}", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 403 for _ in range(20)
                )
            )
        finally:
            done.set()
            for t in threads:
                t.join()
        assert not failures, failures[:5]


def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_a_reload_onto_an_unreadable_token_file_is_refused_and_the_old_tokens_kept(gen_table, tmp_path):
    table, records = gen_table
    tokens = token_file(tmp_path / "tokens", TOKEN)
    with running_server(table, "--read-token-file", tokens, workers=1) as (url, proc):
        tokens.write_text("# emptied\n")
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(2)
        r = httpx.get(f"{url}/v1/keys/{records[0][0]}", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


# -- /metrics on its own bind -------------------------------------------------------------


def test_metrics_bind_serves_metrics_there_only(gen_table):
    table, records = gen_table
    mport = free_port()
    with running_server(table, "--metrics-bind", f"127.0.0.1:{mport}", workers=2) as (url, proc):
        for _ in range(5):
            httpx.get(f"{url}/v1/keys/{records[0][0]}")
        r = httpx.get(f"{url}/metrics")
        assert r.status_code == 404 and f"127.0.0.1:{mport}" in r.json()["detail"]
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"http://127.0.0.1:{mport}/metrics").text
            if "kv_requests_total" in text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "kv_requests_total" in text and "kv_lookups_total" in text


# -- kv/http/auth.py, in process ------------------------------------------------------------


@pytest.mark.parametrize("extra", [0, 1, 20])  # one token; compare_digest each; a keyed MAC and a set
def test_bearer_check_accepts_exactly_the_tokens_of_the_file(extra):
    from kv.http.auth import bearer_check

    tokens = [TOKEN.encode()] + [OTHER.encode()] * (extra > 0) + [b"filler-token-%03d" % i for i in range(extra - 1)]
    allows = bearer_check(tokens)
    assert allows(f"Bearer {TOKEN}".encode()) and allows(f"Bearer {OTHER}".encode()) == (extra > 0)
    for value in (
        None,
        b"",
        TOKEN.encode(),
        f"Bearer {TOKEN} ".encode(),
        f"Bearer {TOKEN[:-1]}".encode(),
        f"Basic {TOKEN}".encode(),
        f"Bearer  {TOKEN}".encode(),
    ):
        assert not allows(value), value


def test_the_bearer_scheme_is_case_insensitive_on_the_checked_path():
    from kv.http.auth import Guard

    guard = Guard([TOKEN.encode()])
    scope = {"raw_path": b"/v1/stats", "headers": [(b"authorization", f"bearer {TOKEN}".encode())]}
    assert guard.refusal(scope) is None
    assert guard.refusal({"raw_path": b"/healthz", "headers": []}) is None
    assert guard.refusal({"raw_path": b"/v1/stats", "headers": []}).status_code == 401
    two = [(b"authorization", f"Bearer {TOKEN}".encode())] * 2
    assert guard.refusal({"raw_path": b"/v1/stats", "headers": two}).status_code == 400
    from kv.http.fastpath import plain_headers

    assert plain_headers([(b"host", b"h"), *two], guard.allows) is False  # left to the checked path's 400
    assert plain_headers([(b"host", b"h"), two[0]], guard.allows) is True


def test_token_file_lines_comments_and_errors_never_echo_a_token(tmp_path):
    from kv.http.auth import TokenFileError, permission_warning, read_token_file

    f = token_file(tmp_path / "t", TOKEN, OTHER)
    f.write_text(f"# comment\n  {TOKEN}  \n\n#{OTHER}\n")
    assert read_token_file(str(f)) == [TOKEN.encode()]
    f.write_text(f"{TOKEN}\nbad token here\n")
    with pytest.raises(TokenFileError) as e:
        read_token_file(str(f))
    assert "line 2" in str(e.value) and "bad token" not in str(e.value) and TOKEN not in str(e.value)
    f.chmod(0o640)
    assert permission_warning(str(f)) is None
    f.chmod(0o604)
    assert "readable by every user" in permission_warning(str(f))
