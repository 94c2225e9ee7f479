"""Issue 15: the nginx front (`kv deploy nginx`) terminates TLS, passes the
read token on to the shards, and limits each client's request rate."""

from __future__ import annotations

import httpx
import pytest
from conftest import free_port
from serverutil import needs_nginx, nginx_front, running_server, tls_context
from test_security import TOKEN, pki, token_file  # noqa: F401 (pki: the fixture)

from kv.deploy import render_nginx

pytestmark = needs_nginx


def test_nginx_terminates_tls_and_passes_the_token_to_the_shard(gen_table, pki, tmp_path):  # noqa: F811
    table, records = gen_table
    k, v = records[0]
    tokens = token_file(tmp_path / "tokens", TOKEN)
    with running_server(table, "--read-token-file", tokens, workers=1) as (shard, _):
        front = free_port()
        conf = render_nginx(
            1,
            {0: [shard.removeprefix("http://")]},
            listen=f"127.0.0.1:{front}",
            certfile=str(pki / "server.pem"),
            keyfile=str(pki / "server.key"),
        )
        url = f"https://127.0.0.1:{front}"
        verify = tls_context(pki / "ca.pem")
        with nginx_front(tmp_path, conf, url, verify), httpx.Client(base_url=url, verify=verify) as c:
            assert c.get(f"/v1/keys/{k}").status_code == 401
            assert c.get(f"/v1/keys/{k}", headers={"authorization": "Bearer wrong-token-1"}).status_code == 403
            r = c.get(f"/v1/keys/{k}", headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.content == v
            r = c.post("/v1/batch", json={"keys": [k]}, headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
        assert TOKEN not in (tmp_path / "error.log").read_text()


def test_nginx_limits_each_client_to_its_rate(gen_table, tmp_path):
    table, records = gen_table
    with running_server(table, workers=1) as (shard, _):
        front = free_port()
        conf = render_nginx(1, {0: [shard.removeprefix("http://")]}, listen=f"127.0.0.1:{front}", rate=5, burst=2)
        url = f"http://127.0.0.1:{front}"
        with nginx_front(tmp_path, conf, url, True), httpx.Client(base_url=url) as c:
            codes = [c.get(f"/v1/keys/{records[0][0]}").status_code for _ in range(30)]
        assert codes.count(429) >= 20 and codes[:3] == [200, 200, 200], codes


def test_the_front_renders_tls_and_the_rate_limit_and_names_them_in_its_command():
    from kv.deploy import DEFAULT_BURST, DEFAULT_RATE, command_line

    conf = render_nginx(1, {0: ["127.0.0.1:8001"]}, certfile="/etc/kv/tls.pem", keyfile="/etc/kv/tls.key")
    assert "listen 127.0.0.1:8080 ssl;" in conf and "ssl_certificate /etc/kv/tls.pem;" in conf
    assert f"rate={DEFAULT_RATE}r/s" in conf and f"burst={DEFAULT_BURST} nodelay" in conf
    assert "proxy_set_header Authorization $http_authorization;" in conf
    assert "limit_req zone" not in render_nginx(1, {0: ["127.0.0.1:8001"]}, rate=0).split("limit_req off")[0].split("server {")[1]
    cmd = command_line(1, {0: ["127.0.0.1:8001"]}, certfile="a.pem", keyfile="a.key", rate=50)
    assert "--certfile a.pem --keyfile a.key" in cmd and "--rate 50" in cmd
    with pytest.raises(ValueError):
        render_nginx(1, {0: ["127.0.0.1:8001"]}, certfile="a.pem")
