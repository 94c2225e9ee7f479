"""Locust smoke run (~10 s): `loadtest/run_locust.py` against a real server
passes with every task of the mix exercised, and fails when the server serves
values other than the data file's."""

import csv
import subprocess
import sys

from conftest import ROOT, read_records, write_records
from serverutil import running_server

RUNNER = [sys.executable, str(ROOT / "loadtest" / "run_locust.py")]
NAMES = {"/v1/keys/[hit]", "/v1/keys/[miss]", "/v1/keys/[malformed]", "/v1/batch[50]"}


def stats(results) -> dict[str, dict]:
    with open(results / "locust_stats.csv") as f:
        return {r["Name"]: r for r in csv.DictReader(f)}


def test_locust_smoke_run_passes_with_every_task(gen_data, tmp_path):
    data, _ = gen_data
    results = tmp_path / "results"
    r = subprocess.run(
        [*RUNNER, "--data", str(data), "--time", "8", "--users", "8", "--spawn-rate", "8", "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = stats(results)
    assert NAMES <= rows.keys(), rows.keys()
    for name in NAMES:
        assert int(rows[name]["Request Count"]) > 0, name
        assert int(rows[name]["Failure Count"]) == 0, name
    assert (results / "report.html").stat().st_size > 10_000
    assert "p95" in r.stderr


def test_locust_fails_when_values_are_wrong(gen_data, tmp_path):
    data, _ = gen_data
    records = read_records(data)
    other = write_records(tmp_path / "other.data", [(k, v + b"!") for k, v in records])
    results = tmp_path / "results"
    with running_server(other, workers=1) as (url, _):
        r = subprocess.run(
            [*RUNNER, "--host", url, "--data", str(data), "--time", "3", "--users", "4", "--spawn-rate", "4", "--results", str(results)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode != 0
    assert "failed requests" in r.stderr
    assert int(stats(results)["/v1/keys/[hit]"]["Failure Count"]) > 0
