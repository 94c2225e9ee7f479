"""kv gen, kv build (and build_table.py), kv verify, kv inspect from the shell."""

import subprocess
import sys

from conftest import ROOT, read_records
from serverutil import KV


def run(*args):
    return subprocess.run([KV, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_gen_is_deterministic_for_a_seed(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run("gen", 500, "-o", tmp_path / f"{name}.data", "--seed", seed).returncode == 0
    a, b, c = ((tmp_path / f"{n}.data").read_bytes() for n in "abc")
    assert a == b and a != c


def test_gen_writes_uuid4_lines_of_lowercase_words(tmp_path):
    import uuid

    run("gen", 2000, "-o", tmp_path / "g.data")
    records = read_records(tmp_path / "g.data")
    assert len(records) == 2000 and len({k for k, _ in records}) == 2000
    counts, lengths = set(), set()
    for k, v in records:
        assert uuid.UUID(k).version == 4 and str(uuid.UUID(k)) == k
        words = v.split(b" ")
        counts.add(len(words))
        lengths.update(len(w) for w in words)
        assert all(w.isalpha() and w.islower() for w in words)
    assert counts == set(range(1, 11)) and lengths == set(range(1, 11))


def test_build_cli_and_build_table_py_make_the_same_table(gen_data, tmp_path):
    data, _ = gen_data
    r1 = run("build", data, "-o", tmp_path / "a.kvt")
    r2 = subprocess.run([sys.executable, str(ROOT / "build_table.py"), str(data), "-o", str(tmp_path / "b.kvt")],
                        capture_output=True, text=True, cwd=tmp_path)
    assert r1.returncode == r2.returncode == 0
    assert "records" in r1.stderr and "table bytes" in r1.stderr
    assert (tmp_path / "a.kvt").read_bytes() == (tmp_path / "b.kvt").read_bytes()


def test_build_default_output_name_replaces_the_suffix(tmp_path):
    run("gen", 10, "-o", tmp_path / "x.data")
    assert run("build", tmp_path / "x.data").returncode == 0
    assert (tmp_path / "x.kvt").exists()


def test_build_errors_exit_1_with_the_reason(tmp_path):
    bad = tmp_path / "bad.data"
    bad.write_text("nope\n")
    r = run("build", bad)
    assert r.returncode == 1 and "bad.data:1" in r.stderr and "no table written" in r.stderr
    r = run("build", tmp_path / "missing.data")
    assert r.returncode == 1 and "no such file" in r.stderr


def test_verify_good_and_corrupt(gen_table, tmp_path):
    path, _ = gen_table
    r = run("verify", path)
    assert r.returncode == 0 and "ok" in r.stdout
    raw = bytearray(path.read_bytes())
    raw[6000] ^= 1
    (tmp_path / "bad.kvt").write_bytes(bytes(raw))
    r = run("verify", tmp_path / "bad.kvt")
    assert r.returncode == 1 and "CORRUPT" in r.stderr


def test_inspect_prints_health(gen_table):
    path, records = gen_table
    r = run("inspect", path)
    assert r.returncode == 0
    for field in ("records", "load_factor", "mean_probe", "max_probe", "content_checksum", "file_bytes", "value_bytes"):
        assert field in r.stdout
    assert f"{len(records):,}" in r.stdout
