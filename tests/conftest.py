"""Shared fixtures. Server-starting helpers live in tests/serverutil.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DATA = ROOT.parent / "shared" / "reference" / "example.data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_records(path: Path, records) -> Path:
    """Write (key, value) pairs as data lines; keys str or bytes, values bytes."""
    with open(path, "wb") as f:
        for k, v in records:
            kb = k.encode() if isinstance(k, str) else k
            f.write(kb + b" " + v + b"\n")
    return path


def read_records(path: Path) -> list[tuple[str, bytes]]:
    out = []
    with open(path, "rb") as f:
        for line in f:
            k, v = line.rstrip(b"\n").split(b" ", 1)
            out.append((k.decode(), v))
    return out


@pytest.fixture(scope="session")
def gen_data(tmp_path_factory):
    """A generated data file of 20,000 records and its records."""
    from kv.gen import generate_file

    path = tmp_path_factory.mktemp("gen") / "gen.data"
    generate_file(20_000, path, seed=7)
    return path, read_records(path)


@pytest.fixture(scope="session")
def gen_table(gen_data, tmp_path_factory):
    """The table built from gen_data."""
    from kv.build import build_table

    data, records = gen_data
    out = tmp_path_factory.mktemp("gentable") / "gen.kvt"
    build_table(data, out)
    return out, records


@pytest.fixture
def held_flushes(monkeypatch):
    """Keep the per-worker tallies where a test can count them: the app's
    background task moves them into prometheus_client every 50 ms, which would
    zero `counts.fast` between a test's two readings."""
    import time

    from kv import metrics

    monkeypatch.setattr(metrics.Counts, "flush", lambda self: None)
    time.sleep(2 * metrics.FLUSH_SECONDS)  # a flush already under way has finished
