"""kv gen, kv build (and build_table.py), kv verify, kv inspect: exit codes and
what they print. Most run in-process through kv.cli.main; the console script
and build_table.py run once each as real processes."""

import dataclasses
import json
import signal
import subprocess
import sys
import uuid

import pytest
import xxhash
from conftest import ROOT, write_records
from serverutil import KV

import kv
from kv import format as fmt
from kv.cli import main
from kv.options import BuildOptions

K1, K2 = str(uuid.UUID(int=11, version=4)), str(uuid.UUID(int=12, version=4))


@pytest.fixture(autouse=True)
def keep_sigterm():
    """kv build turns SIGTERM into SystemExit; keep that out of the test process."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.fixture
def kv_cli(capsys):
    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def data_file(tmp_path, content: bytes, name="in.data"):
    p = tmp_path / name
    p.write_bytes(content)
    return p


# -- kv gen ----------------------------------------------------------------------


def test_gen_is_deterministic_for_a_seed(kv_cli, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        code, _, err = kv_cli("gen", 500, "-o", tmp_path / f"{name}.data", "--seed", seed)
        assert code == 0 and "wrote 500 records" in err
    a, b, c = ((tmp_path / f"{n}.data").read_bytes() for n in "abc")
    assert a == b and a != c and a.count(b"\n") == 500


def test_gen_to_stdout_and_default_seed(capsysbinary, tmp_path):
    assert main(["gen", "50", "-o", "-"]) == 0
    out = capsysbinary.readouterr().out
    assert main(["gen", "50", "-o", str(tmp_path / "g.data")]) == 0
    assert out == (tmp_path / "g.data").read_bytes()


def test_gen_refuses_a_negative_count(kv_cli, tmp_path):
    code, _, err = kv_cli("gen", -1, "-o", tmp_path / "g.data")
    assert code == 2 and "zero or more" in err and not (tmp_path / "g.data").exists()


@pytest.mark.parametrize(
    "args,code,said",
    [
        (("--seed", "-1"), 2, "--seed must be zero or more"),
        (("-o", "/nonexistent/dir/g.data"), 1, "cannot write /nonexistent/dir/g.data"),
    ],
)
def test_gen_errors_say_what_is_wrong(kv_cli, args, code, said):
    got, _, err = kv_cli("gen", 10, *(("-o", "-") if "-o" not in args else ()), *args)
    assert got == code and said in err


def test_gen_to_a_closed_pipe_exits_quietly():
    proc = subprocess.Popen([KV, "gen", "1000000", "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()  # like `kv gen ... | head`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b""


# -- kv build --------------------------------------------------------------------


def test_build_succeeds_with_a_summary_and_json_report(kv_cli, gen_data, tmp_path):
    data, records = gen_data
    code, out, err = kv_cli("build", data, "-o", tmp_path / "t.kvt", "--json")
    assert code == 0
    for word in ("records", "duplicates", "skipped", "value bytes", "table bytes", "seconds"):
        assert word in err
    report = json.loads(out)
    assert report["records"] == len(records) and report["table"] == str(tmp_path / "t.kvt")


def test_build_default_output_name_replaces_the_suffix(kv_cli, tmp_path):
    data = write_records(tmp_path / "x.data", [(K1, b"a")])
    assert kv_cli("build", data)[0] == 0
    assert (tmp_path / "x.kvt").exists()


def test_build_stops_on_a_malformed_line_naming_file_line_and_text(kv_cli, tmp_path):
    data = data_file(tmp_path, f"{K1} a\nnope-no-space\n".encode())
    code, _, err = kv_cli("build", data)
    assert code == 1 and f"{data}:2: no space separating key and value: nope-no-space" in err
    assert "no table written" in err
    assert not (tmp_path / "in.kvt").exists()


def test_build_skip_invalid_reports_the_skipped_lines(kv_cli, tmp_path):
    data = data_file(tmp_path, f"{K1} a\nnope\n{K2} b\n".encode())
    code, _, err = kv_cli("build", data, "--skip-invalid")
    assert code == 0 and "skipped      1" in err and "skipped line 2" in err


def test_build_duplicates_exit_1_unless_a_policy_is_chosen(kv_cli, tmp_path):
    data = data_file(tmp_path, f"{K1} a\n{K1} b\n".encode())
    code, _, err = kv_cli("build", data)
    assert code == 1 and ":2: key" in err and "line 1" in err and "--on-duplicate" in err
    code, _, err = kv_cli("build", data, "--on-duplicate=last")
    assert code == 0 and "duplicates   1" in err and "duplicate line 1" in err


def test_build_crlf_exits_1_unless_stripped_or_kept(kv_cli, tmp_path):
    data = data_file(tmp_path, f"{K1} a\r\n".encode())
    code, _, err = kv_cli("build", data)
    assert code == 1 and "--strip-cr" in err
    code, _, err = kv_cli("build", data, "--strip-cr")
    assert code == 0 and "CR stripped  1" in err
    assert kv_cli("build", data, "--keep-cr")[0] == 0


def test_build_usage_errors_exit_2(kv_cli, tmp_path):
    data = data_file(tmp_path, f"{K1} a\n".encode())
    for args in (("--strip-cr", "--keep-cr"), ("--on-duplicate=newest",), ()):
        with pytest.raises(SystemExit) as e:
            main(["build", *([str(data)] if args else []), *args])
        assert e.value.code == 2


@pytest.mark.parametrize("value", ["0.99", "2", "0.05", "nan", "lots"])
def test_build_load_factor_out_of_range_is_a_usage_error(capsys, tmp_path, value):
    data = data_file(tmp_path, f"{K1} a\n".encode())
    with pytest.raises(SystemExit) as e:
        main(["build", str(data), "--load-factor", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--load-factor" in err and "usage:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.data"]


def test_build_flags_become_the_table_options(kv_cli, tmp_path):
    data = data_file(tmp_path, f"{K1} a\r\n{K1} b\r\n".encode())
    code, _, err = kv_cli("build", data, "--keep-cr", "--on-duplicate", "first", "--load-factor", "0.5")
    assert code == 0, err
    with kv.open_table(tmp_path / "in.kvt") as t:
        assert t.meta["options"] == BuildOptions(keep_cr=True, on_duplicate="first", load_factor=0.5).recorded()
        assert t.get(K1) == b"a\r"


@pytest.mark.parametrize("case", ["missing", "directory", "output-directory", "shards"])
def test_build_errors_exit_1_with_the_reason(kv_cli, tmp_path, case):
    data = data_file(tmp_path, f"{K1} a\n".encode())
    args, said = {
        "missing": ((tmp_path / "missing.data",), "no such file"),
        "directory": ((tmp_path,), "directory"),
        "output-directory": ((data, "-o", tmp_path), "directory"),
        "shards": ((data, "--shards", "3"), "power of two"),
    }[case]
    code, _, err = kv_cli("build", *args)
    assert code == 1 and said in err.lower() and "Traceback" not in err


def test_kv_and_build_table_py_make_the_same_table(gen_data, tmp_path):
    data, _ = gen_data
    r1 = subprocess.run([KV, "build", str(data), "-o", str(tmp_path / "a.kvt")], capture_output=True, text=True, timeout=120)
    r2 = subprocess.run(
        [sys.executable, str(ROOT / "build_table.py"), str(data), "-o", str(tmp_path / "b.kvt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    assert "records" in r1.stderr and "table bytes" in r2.stderr
    assert (tmp_path / "a.kvt").read_bytes() == (tmp_path / "b.kvt").read_bytes()


# -- kv verify -------------------------------------------------------------------


def test_verify_a_good_table(kv_cli, gen_table):
    path, records = gen_table
    code, out, _ = kv_cli("verify", path)
    assert code == 0 and f"{path}: ok, {len(records):,} records" in out


def corrupt_copies(src, tmp_path):
    raw = src.read_bytes()
    h = fmt.Header.unpack(raw)
    flipped = bytearray(raw)
    flipped[h.slots_offset + 20] ^= 1
    truncated = raw[:-1]
    # unsorted slot hashes behind a recomputed content checksum: only the structure check sees it
    resealed = bytearray(raw)
    resealed[h.slots_offset : h.slots_offset + 4] = b"\xff\xff\xff\xff"
    hh = dataclasses.replace(h, content_checksum=xxhash.xxh3_64_intdigest(bytes(resealed[fmt.HEADER_SIZE :]))).pack()
    resealed[: fmt.HEADER.size] = hh[: fmt.HEADER_CHECKSUM_AT] + xxhash.xxh3_64_intdigest(hh[: fmt.HEADER_CHECKSUM_AT]).to_bytes(
        8, "little"
    )
    paths = {}
    for name, content in (("flipped", flipped), ("truncated", truncated), ("structure", resealed)):
        paths[name] = tmp_path / f"{name}.kvt"
        paths[name].write_bytes(bytes(content))
    return paths


def test_verify_reports_each_corrupt_table_and_exits_1(kv_cli, gen_table, tmp_path):
    path, _ = gen_table
    bad = corrupt_copies(path, tmp_path)
    code, out, err = kv_cli("verify", path, *bad.values(), tmp_path / "missing.kvt")
    assert code == 1
    assert f"{path}: ok" in out
    assert "checksum mismatch" in err and "truncated" in err and "not sorted" in err
    assert err.count("CORRUPT") == 3 and "Traceback" not in err
    assert f"{tmp_path / 'missing.kvt'}: cannot read" in err


# -- kv inspect ------------------------------------------------------------------


def test_inspect_prints_records_load_factor_probe_lengths_and_checksum(kv_cli, gen_table):
    path, records = gen_table
    code, out, _ = kv_cli("inspect", path)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["records"] == f"{len(records):,}"
    assert 0.7 < float(fields["load_factor"]) <= 0.8
    assert 1 <= float(fields["mean_probe"]) <= int(fields["max_probe"])
    assert len(fields["content_checksum"]) == 16
    for field in ("file_bytes", "value_bytes", "slots", "source", "built_at", "options"):
        assert field in fields


def test_inspect_json_agrees_with_the_table(kv_cli, gen_table):
    import kv

    path, records = gen_table
    code, out, _ = kv_cli("inspect", path, "--json")
    d = json.loads(out)
    with kv.open_table(path) as t:
        s = t.stats()
        assert code == 0 and d["records"] == len(records) == s.records
        assert d["max_probe"] == s.max_probe and d["file_bytes"] == path.stat().st_size
        assert d["content_checksum"] == t.generation and d["meta"]["source"]["name"] == "gen.data"


def test_inspect_a_corrupt_or_missing_table_exits_1(kv_cli, gen_table, tmp_path):
    path, _ = gen_table
    (tmp_path / "cut.kvt").write_bytes(path.read_bytes()[:5000])
    for p in (tmp_path / "cut.kvt", tmp_path / "missing.kvt"):
        code, _, err = kv_cli("inspect", p)
        assert code == 1 and "kv inspect:" in err


def test_a_full_disk_is_reported_against_the_table_not_the_input(kv_cli, tmp_path, monkeypatch):
    import errno

    from kv.writer import TableWriter

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TableWriter, "add", full)
    src = data_file(tmp_path, f"{K1} one\n".encode())
    code, _, err = kv_cli("build", src, "-o", tmp_path / "out.kvt")
    assert code == 1
    assert f"{tmp_path / 'out.kvt'}: No space left on device (writing the table" in err and "in.data" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.data"]  # no table, no temporary file
