"""The C speedups (kv/_speedups.c) give exactly the Python paths' results.

`make test` also runs the table, corruption and build tests a second time with
KV_PURE_PYTHON=1, so each implementation passes the whole suite on its own;
this file compares the two directly, on the same tables and keys.
"""

import os
import random
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
import xxhash
from conftest import ROOT, write_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kv
from kv import speedups
from kv.build import build_table

c = speedups.native()
needs_c = pytest.mark.skipif(c is None, reason="kv._speedups is not built (no C compiler at install time)")

values = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b""))
tables = st.dictionaries(st.uuids(version=4).map(str), values, max_size=200)


def test_the_extension_is_built_where_a_compiler_is_present():
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the pure-Python paths serve")
    assert c is not None, "kv._speedups failed to build; run `pip install -e .` and read the compiler's error"


def test_kv_pure_python_disables_the_extension(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import kv.speedups as s; print(s.implementation())"],
        env={**os.environ, "KV_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "python"


@needs_c
def test_xxh3_matches_the_xxhash_package_on_every_length():
    rnd = random.Random(5)
    lengths = list(range(0, 4100)) + [rnd.randrange(4100, 200_000) for _ in range(40)]
    for n in lengths:
        b = rnd.randbytes(n)
        assert c.xxh3_64(b) == xxhash.xxh3_64_intdigest(b), f"length {n}"


@needs_c
def test_hash_spans_hashes_each_span():
    rnd = random.Random(6)
    buf = rnd.randbytes(5000)
    starts = np.array([rnd.randrange(0, 2500) for _ in range(300)], dtype=np.int64)
    ends = starts + np.array([rnd.randrange(0, 2500) for _ in range(300)], dtype=np.int64)
    out = np.zeros(300, dtype=np.uint64)
    c.hash_spans(buf, starts, ends, out)
    assert out.tolist() == [xxhash.xxh3_64_intdigest(buf[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


@needs_c
@pytest.mark.parametrize("start, end", [(-1, 3), (10, 9), (0, 5001), (5000, 5001)])
def test_hash_spans_refuses_spans_outside_the_buffer(start, end):
    out = np.zeros(1, dtype=np.uint64)
    with pytest.raises(ValueError, match="outside the buffer"):
        c.hash_spans(bytes(5000), np.array([start], dtype=np.int64), np.array([end], dtype=np.int64), out)


@needs_c
def test_hash_spans_refuses_wrong_arrays():
    with pytest.raises(TypeError, match="8-byte integers"):
        c.hash_spans(b"abc", np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.uint64))
    with pytest.raises(ValueError, match="same length"):
        c.hash_spans(b"abc", np.zeros(2, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.uint64))
    with pytest.raises((TypeError, ValueError, BufferError)):
        c.hash_spans(b"abc", np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), b"12345678")  # read-only out


@needs_c
@pytest.mark.parametrize("n", [0, 1, 2, 7, 9, 49, 1000, 200_003])
def test_sort_records_gives_numpys_stable_argsort_order(n):
    rng = np.random.default_rng(n)
    random_hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    repeated = random_hashes.copy()
    repeated[1 : n // 2 : 3] = random_hashes[0] if n else 0  # many equal hashes: ties keep input order
    crowded = random_hashes >> np.uint64(30)  # all in the first buckets: the crafted-keys fallback
    low_bits_only = random_hashes & np.uint64(0xFF)
    refs = np.arange(n, dtype=np.uint64) * np.uint64(100) + np.uint64(4096)  # grow with input position
    checks = rng.integers(0, 2**32, n, dtype=np.uint32)
    for h in (random_hashes, repeated, crowded, low_bits_only, np.zeros(n, dtype=np.uint64)):
        k2, r2, c2 = h.copy(), refs.copy(), checks.copy()
        c.sort_records(k2, r2, c2)
        order = np.argsort(h, kind="stable")
        assert np.array_equal(k2, h[order]) and np.array_equal(r2, refs[order]) and np.array_equal(c2, checks[order])


@needs_c
def test_sort_records_refuses_mismatched_or_wrong_arrays():
    with pytest.raises(ValueError, match="same length"):
        c.sort_records(np.zeros(3, dtype=np.uint64), np.zeros(2, dtype=np.uint64), np.zeros(3, dtype=np.uint32))
    with pytest.raises(TypeError, match="4-byte"):
        c.sort_records(np.zeros(3, dtype=np.uint64), np.zeros(3, dtype=np.uint64), np.zeros(3, dtype=np.uint64))
    with pytest.raises((TypeError, BufferError)):
        c.sort_records(bytes(24), np.zeros(3, dtype=np.uint64), np.zeros(3, dtype=np.uint32))  # read-only


def both_lookups(path):
    """The same table opened with the C lookup and with the Python one."""
    t_c = kv.open_table(path)
    os.environ["KV_PURE_PYTHON"] = "1"
    try:
        t_py = kv.open_table(path)
    finally:
        del os.environ["KV_PURE_PYTHON"]
    assert (t_c.implementation, t_py.implementation) == ("c", "python")
    return t_c, t_py


def outcome(get, key):
    try:
        return ("value", get(key))
    except kv.InvalidKey as e:
        return ("invalid", str(e))


def key_forms(k: str):
    return [
        k,
        k.upper(),
        k.replace("-", ""),
        k.replace("-", "").upper(),
        k.encode(),
        k.upper().encode(),
        bytearray(k.encode()),
        memoryview(k.encode()),
        k[:-1],
        k + "0",
        k.replace("-", "_"),
        " " + k[1:],
        k[:8] + "g" + k[9:],
        k[:35] + "\u00e9",
        k.encode()[:35] + b"\xff",
    ]


@needs_c
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=tables, others=st.lists(st.uuids(), max_size=20), load=st.sampled_from([0.5, 0.95]))
def test_c_and_python_lookups_agree_on_every_key_form(tmp_path_factory, records, others, load):
    d = tmp_path_factory.mktemp("agree")
    build_table(write_records(d / "t.data", records.items()), d / "t.kvt", load_factor=load, keep_cr=True)
    t_c, t_py = both_lookups(d / "t.kvt")
    with t_c, t_py:
        for k in list(records) + [str(u) for u in others]:
            for form in key_forms(k):
                assert outcome(t_c.get, form) == outcome(t_py.get, form), form
        for odd in ["", "x", "0" * 36, "-" * 36, "0" * 32, 12, None, b"\x00" * 36, "\ud800" * 36]:
            a, b = outcome(t_c.get, odd), outcome(t_py.get, odd)
            assert a == b, odd


@needs_c
def test_c_lookup_raises_table_corrupt_like_python_on_a_flipped_record_byte(tmp_path):
    rnd = random.Random(3)
    records = {str(uuid.UUID(int=rnd.getrandbits(128), version=4)): b"v%d" % i for i in range(50)}
    build_table(write_records(tmp_path / "t.data", records.items()), tmp_path / "t.kvt")
    t = kv.open_table(tmp_path / "t.kvt")
    h = t.header
    t.close()
    raw = bytearray((tmp_path / "t.kvt").read_bytes())
    raw[h.records_offset + 37] ^= 0x01  # the first byte of the first record's value
    (tmp_path / "bad.kvt").write_bytes(raw)
    first = bytes(raw[h.records_offset : h.records_offset + 36]).decode()
    t_c, t_py = both_lookups(tmp_path / "bad.kvt")
    with t_c, t_py:
        for get in (t_c.get, t_py.get):
            with pytest.raises(kv.TableCorrupt, match="checksum"):
                get(first)


@needs_c
def test_closing_a_table_releases_the_c_lookups_view_of_the_map(tmp_path):
    build_table(write_records(tmp_path / "t.data", [(str(uuid.uuid4()), b"v")]), tmp_path / "t.kvt")
    t = kv.open_table(tmp_path / "t.kvt")
    get = t.get
    t.close()  # no BufferError: the lookup gave its view back
    with pytest.raises(ValueError, match="closed"):
        get(str(uuid.uuid4()))
    with pytest.raises(ValueError, match="closed"):
        t.get(str(uuid.uuid4()))


@needs_c
def test_lookup_refuses_regions_outside_the_buffer():
    with pytest.raises(ValueError, match="outside"):
        c.Lookup(bytes(4096), 10, 0, 1000, 0, 10, print, print)


def test_c_and_python_builds_are_byte_identical(tmp_path):
    from kv.gen import generate_file

    data = tmp_path / "g.data"
    generate_file(5000, data, seed=9)
    lines = data.read_bytes().splitlines(keepends=True)
    with open(data, "ab") as f:  # duplicates, resolved by input order: the sort must keep it
        f.writelines(line[:37] + b"again %d\n" % i for i, line in enumerate(lines[::50]))
    code = "import sys; from kv.build import build_table; build_table(sys.argv[1], sys.argv[2], progress=False, on_duplicate='last')"
    for name, pure in (("c.kvt", "0"), ("py.kvt", "1")):
        subprocess.run(
            [sys.executable, "-c", code, str(data), str(tmp_path / name)], cwd=ROOT, check=True, env={**os.environ, "KV_PURE_PYTHON": pure}
        )
    assert (tmp_path / "c.kvt").read_bytes() == (tmp_path / "py.kvt").read_bytes()


@needs_c
@given(
    st.lists(
        st.one_of(st.binary(max_size=6), st.sampled_from([b"%", b"%2F", b"%3a", b"%zz", b"%4", b"%%41", b"+", b"%C3%A9"])),
        max_size=12,
    ).map(b"".join)
)
def test_c_unquote_decodes_exactly_as_urllib(raw):
    from urllib.parse import unquote_to_bytes

    assert c.unquote(raw) == unquote_to_bytes(raw)


# -- tsv_records: a block of tsv lines in one C pass (kv/strlines.py TsvReader) --

TSV_PIECES = [
    b"k",
    b"key",
    b"\t",
    b"\r",
    b"\r\n",
    b"\n",
    b"v",
    b" ",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x94\x91",
    b"\xff",
    b"\xc3",
    b"x" * 9,
]
tsv_lines = st.tuples(
    st.text(min_size=1, max_size=10).map(lambda k: k.encode("utf-8", "surrogatepass").replace(b"\t", b"").replace(b"\n", b"")),
    st.binary(max_size=10).map(lambda v: v.replace(b"\n", b"")),
    st.sampled_from([b"\n", b"\r\n"]),
).map(lambda kvn: kvn[0] + b"\t" + kvn[1] + kvn[2])
tsv_blocks = st.one_of(
    st.lists(tsv_lines, min_size=1, max_size=12).map(b"".join),  # mostly records: lone surrogates, empty keys and CRs refuse some
    st.lists(st.one_of(st.binary(max_size=12), st.sampled_from(TSV_PIECES)), max_size=40).map(lambda p: b"".join(p) + b"\n"),
)


def tsv_reader(**options):
    from kv.options import BuildOptions
    from kv.report import BuildReport
    from kv.strlines import TsvReader

    return TsvReader(None, "t.tsv", BuildReport(source="t.tsv", table="t.kvt"), BuildOptions(format="tsv", **options), 1 << 20)


def numpy_block(monkeypatch, buf, **options):
    """The Python (numpy) path's records and report for `buf`, or the DataFormatError it raises."""
    from kv import strlines
    from kv.errors import DataFormatError

    reader = tsv_reader(skip_invalid=True, **options)
    with monkeypatch.context() as m:
        m.setattr(strlines, "native", lambda: None)
        try:
            return reader._block(bytearray(buf)), reader.report
        except DataFormatError as e:
            return e, reader.report


@needs_c
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(buf=tsv_blocks, cr=st.sampled_from([{}, {"strip_cr": True}, {"keep_cr": True}]))
def test_tsv_records_gives_the_numpy_paths_records_or_refuses_a_block_it_refuses(monkeypatch, buf, cr):
    reader = tsv_reader(**cr)
    fast = reader._block_c(c, bytearray(buf))
    slow, report = numpy_block(monkeypatch, buf, **cr)
    if fast is None:  # some line is not a record: the numpy path stops or skips
        assert isinstance(slow, Exception) or report.skipped > 0
        assert reader.report.lines == 0 and reader.line_base == 0  # nothing counted twice
        return
    assert not isinstance(slow, Exception) and report.skipped == 0
    assert fast.buf == slow.buf
    for name in ("starts", "vlens", "h64", "checks", "lens"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    assert (reader.report.lines, reader.report.cr_stripped, reader.line_base) == (report.lines, report.cr_stripped, buf.count(b"\n"))


@needs_c
@given(key=st.one_of(st.binary(max_size=20), st.text(max_size=8).map(lambda s: s.encode("utf-8", "surrogatepass"))))
@pytest.mark.parametrize("pad", [b"", b"abcdefg"])  # multi-byte sequences across the 8-byte ASCII steps
def test_tsv_records_takes_a_key_exactly_when_it_is_utf8(key, pad):
    key = pad + key.replace(b"\t", b"").replace(b"\n", b"").replace(b"\r", b"")
    line = key + b"\tvalue\n"
    try:
        key.decode("utf-8")
        valid = bool(key)
    except UnicodeDecodeError:
        valid = False
    got = tsv_reader()._block_c(c, bytearray(line))
    assert (got is not None) == valid
    if valid:
        assert got.buf == len(key).to_bytes(2, "little") + key + b"value"


@needs_c
@pytest.mark.parametrize(
    "key",
    [b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xc3", b"\xe2\x82", b"\x80", b"ok\xef\xbf"],
)
def test_tsv_records_refuses_overlong_surrogate_out_of_range_and_cut_utf8(key):
    assert tsv_reader()._block_c(c, bytearray(key + b"\tv\n")) is None


@needs_c
def test_tsv_records_takes_the_longest_key_and_refuses_one_byte_more():
    assert tsv_reader()._block_c(c, bytearray(b"k" * 1024 + b"\tv\n")) is not None
    assert tsv_reader()._block_c(c, bytearray(b"k" * 1025 + b"\tv\n")) is None


@needs_c
def test_tsv_records_refuses_short_arrays_and_bad_modes():
    arrays = [np.zeros(1, dtype=t) for t in (np.int64, np.int64, np.int64, np.uint64, np.uint32)]
    with pytest.raises(ValueError, match="fewer entries"):
        c.tsv_records(b"a\tb\nc\td\n", 0, *arrays)
    with pytest.raises(ValueError, match="cr_mode"):
        c.tsv_records(b"a\tb\n", 3, *arrays)
    with pytest.raises(TypeError, match="checks"):
        c.tsv_records(b"a\tb\n", 0, *arrays[:4], np.zeros(1, dtype=np.uint64))


def test_c_and_python_tsv_builds_are_byte_identical(tmp_path):
    from kv.gen import generate_file

    data = tmp_path / "g.tsv"
    generate_file(5000, data, seed=9, keys="string")
    lines = data.read_bytes().splitlines(keepends=True)
    with open(data, "ab") as f:  # duplicates, CR LF endings and a skipped line in later blocks
        f.writelines(line.split(b"\t")[0] + b"\tagain %d\r\n" % i for i, line in enumerate(lines[::50]))
        f.write(b"no tab here\n")
    code = (
        "import sys; from kv.build import build_table; "
        "build_table(sys.argv[1], sys.argv[2], progress=False, on_duplicate='last', strip_cr=True, skip_invalid=True, block_size=4096)"
    )
    for name, pure in (("c.kvt", "0"), ("py.kvt", "1")):
        subprocess.run(
            [sys.executable, "-c", code, str(data), str(tmp_path / name)], cwd=ROOT, check=True, env={**os.environ, "KV_PURE_PYTHON": pure}
        )
    assert (tmp_path / "c.kvt").read_bytes() == (tmp_path / "py.kvt").read_bytes()
