"""The image's HEALTHCHECK: healthy when the server's /readyz answers 200.

The address is the one the server was started with: `--bind` on its command
line (pid 1 in the container), else KV_BIND; 0.0.0.0 and [::] are reached via
loopback. Run with `python -I -S` (standard library only, about 20 ms).
"""

import http.client
import os
import socket
import sys

# kv.settings.BIND's default (it cannot be imported under -I -S; tests/unit/test_settings.py checks the two agree)
DEFAULT_BIND = "127.0.0.1:8000"


def bind_address() -> str:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        args = []
    for i, a in enumerate(args):
        if a == "--bind" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--bind="):
            return a.split("=", 1)[1]
    return os.environ.get("KV_BIND", DEFAULT_BIND)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def main() -> int:
    bind = bind_address()
    if bind.startswith("unix:"):
        conn = UnixConnection(bind[5:], timeout=2)
    else:
        host, _, port = bind.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        body = resp.read(300).decode(errors="replace").strip()
    except OSError as e:
        print(f"not ready: {bind}: {e}")
        return 1
    print(f"{resp.status} {body}")
    return 0 if resp.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
