"""Tables of string keys (format version 2), read through the C lookup and the
pure-Python one, checked against tables written by tests/reference_writer.py
from docs/FORMAT.md alone."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_writer import reference_table

import kv
from kv import format as fmt
from kv.table import Table

string_keys = (
    st.text(min_size=1, max_size=40)
    .filter(lambda k: len(k.encode("utf-8", "surrogatepass")) <= 1024)
    .filter(lambda k: not any(0xD800 <= ord(c) <= 0xDFFF for c in k))
)
values = st.binary(max_size=300)

STRESS_KEYS = [
    "/",
    "..",
    "%",
    "%2F",
    "?",
    "#",
    "+",
    "a b",
    "tab\there",
    "new\nline",
    "ключ",
    "🔑",
    "User:42",
    "user:42",
    "3479D894-3271-4935-88CF-A06F3CBB80A5",
    "k" * 1024,
    "é" * 512,
]


def write(tmp_path, records, **kw):
    path = tmp_path / "t.kvt"
    path.write_bytes(reference_table([(k.encode(), v) for k, v in records], **kw))
    return path


@pytest.fixture(params=["c", "python"])
def impl(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setenv("KV_PURE_PYTHON", "1")
    elif kv.speedups.native() is None:
        pytest.skip("kv._speedups is not built")
    return request.param


def test_every_stress_key_reads_back_its_value(tmp_path, impl):
    records = [(k, f"v{i}".encode() + bytes([i])) for i, k in enumerate(STRESS_KEYS)]
    with kv.open_table(write(tmp_path, records)) as t:
        assert t.key_kind == "string" and t.implementation == impl
        for k, v in records:
            assert t.get(k) == v
            assert t.get(k.encode()) == v
        assert t.get("USER:42") is None  # byte-exact: no case folding
        assert t.get("3479d894-3271-4935-88cf-a06f3cbb80a5") is None  # no UUID canonicalisation either
        assert t.get("k" * 1023) is None and t.get("kk") is None  # a prefix of a key is not the key


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "empty"),
        (b"", "empty"),
        ("k" * 1025, "1,025 bytes"),
        ("é" * 513, "1,026 bytes"),
        ("\ud800", "not valid Unicode"),
        (b"\xff\xfe", "not valid UTF-8"),
        (7, "str or bytes"),
    ],
)
def test_a_malformed_key_is_invalid_key_naming_the_fault(tmp_path, impl, bad, message):
    with kv.open_table(write(tmp_path, [("a", b"1")])) as t, pytest.raises(kv.InvalidKey, match=message):
        t.get(bad)


@settings(max_examples=60, deadline=None)
@given(
    records=st.dictionaries(string_keys, values, max_size=150),
    others=st.lists(string_keys, max_size=20),
    load=st.sampled_from([0.5, 0.8, 0.95]),
)
def test_any_table_of_string_keys_round_trips_in_both_implementations(tmp_path_factory, records, others, load):
    path = tmp_path_factory.mktemp("s") / "t.kvt"
    path.write_bytes(reference_table([(k.encode(), v) for k, v in records.items()], load_factor=load))
    import kv.speedups

    tables = [Table(path)]
    if kv.speedups.native() is not None:
        tables.append(Table(path))
        tables[0].get = tables[0]._make_python_get_str()  # the same file through both lookups
    for t in tables:
        for k, v in records.items():
            assert t.get(k) == v
        for k in others:
            assert t.get(k) == records.get(k)
        assert {k.decode(): v for k, v in t.items()} == records
        assert len(t) == len(records)
        t.verify()
        t.close()


def test_uuid_tables_are_version_1_and_string_tables_version_2(tmp_path):
    path = write(tmp_path, [("a", b"1")])
    assert int.from_bytes(path.read_bytes()[8:12], "little") == fmt.VERSION_STRING == 2
    with kv.open_table(path) as t:
        assert t.header.version == 2 and "keys=string" in repr(t)


def test_an_unknown_version_is_refused_in_one_line_naming_the_known_ones(tmp_path):
    data = bytearray(reference_table([(b"a", b"1")]))
    data[8:12] = (3).to_bytes(4, "little")
    import xxhash

    data[120:128] = xxhash.xxh3_64_intdigest(bytes(data[:120])).to_bytes(8, "little")
    path = tmp_path / "v3.kvt"
    path.write_bytes(data)
    with pytest.raises(kv.TableCorrupt) as e:
        kv.open_table(path)
    assert "version 3" in str(e.value) and "1 (uuid keys) and 2 (string keys)" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_record_whose_key_length_overruns_it_is_corrupt_not_a_value(tmp_path, impl):
    data = bytearray(reference_table([(b"abc", b"xyz")]))
    data[4096:4098] = (200).to_bytes(2, "little")  # key length past the record's end
    path = tmp_path / "bad.kvt"
    path.write_bytes(data)
    t = Table(path)
    with pytest.raises(kv.TableCorrupt):
        list(t.items())
    assert t.get("abc") is None  # the lookup compares the length first: absent, never a wrong value
    t.close()


def test_reference_writer_matches_the_builder_for_uuid_tables(tmp_path, gen_data):
    """The oracle itself is right: for UUID data it writes the builder's bytes."""
    from kv.build import build_table

    data, records = gen_data
    out = tmp_path / "g.kvt"
    build_table(data, out)
    built = out.read_bytes()
    with kv.open_table(out) as t:
        meta = {k: v for k, v in t.meta.items() if k not in ("records", "value_bytes", "load_factor", "max_displacement")}
    ref = reference_table([(k.encode(), v) for k, v in records], kind="uuid", meta=meta)
    assert ref == built, json.dumps(meta)
