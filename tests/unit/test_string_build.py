"""Building tables of string keys from tsv and jsonl files: every rule of the
input formats, records in = records stored + records reported, and the bytes
equal to what tests/reference_writer.py writes from docs/FORMAT.md alone."""

import base64
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_writer import reference_table

import kv
from kv.build import build_table
from kv.errors import DataFormatError, DuplicateKey
from kv.keys import string_shard_of
from kv.options import BuildOptions
from kv.shard import build_shards

STRESS = [
    "/",
    "..",
    "%",
    "%2F",
    "?",
    "#",
    "+",
    "a b",
    "ключ",
    "🔑",
    "User:42",
    "user:42",
    "3479D894-3271-4935-88CF-A06F3CBB80A5",
    "k" * 1024,
]
keys = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30).filter(lambda k: len(k.encode()) <= 1024)


def jsonl_line(key: str, value: bytes) -> bytes:
    try:
        obj = {"key": key, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        obj = {"key": key, "value_base64": base64.b64encode(value).decode()}
    return json.dumps(obj).encode() + b"\n"


def write(path, lines):
    path.write_bytes(b"".join(lines))
    return path


def same_as_reference(table_path, records):
    with kv.open_table(table_path) as t:
        meta = {k: v for k, v in t.meta.items() if k not in ("records", "value_bytes", "load_factor", "max_displacement")}
        shard = (t.header.shard_index, t.header.shard_count)
    lf = meta["options"]["load_factor"]  # the builder's default for string keys unless given
    ref = reference_table([(k.encode(), v) for k, v in records], kind="string", load_factor=lf, meta=meta, shard=shard)
    return table_path.read_bytes() == ref


def test_a_tsv_file_builds_the_reference_table(tmp_path):
    records = [("user:42", b"hello world"), ("ключ", "значение".encode()), ("a b", b"tab\tinside"), ("empty", b"")]
    data = write(tmp_path / "d.tsv", [k.encode() + b"\t" + v + b"\n" for k, v in records])
    report = build_table(data, tmp_path / "d.kvt")
    assert report.input_format == "tsv" and report.records == 4 and report.value_bytes == sum(len(v) for _, v in records)
    assert same_as_reference(tmp_path / "d.kvt", records)
    with kv.open_table(tmp_path / "d.kvt") as t:
        assert t.key_kind == "string" and t.meta["options"]["format"] == "tsv"


def test_every_stress_key_round_trips_through_jsonl(tmp_path):
    records = [(k, f"value {i}\n with a newline".encode()) for i, k in enumerate(STRESS)] + [("tab\there\nnewline", b"\x00\xff")]
    data = write(tmp_path / "d.jsonl", [jsonl_line(k, v) for k, v in records])
    build_table(data, tmp_path / "d.kvt")
    assert same_as_reference(tmp_path / "d.kvt", records)
    with kv.open_table(tmp_path / "d.kvt") as t:
        for k, v in records:
            assert t.get(k) == v
        assert t.get("USER:42") is None


@settings(max_examples=40, deadline=None)
@given(records=st.dictionaries(keys, st.binary(max_size=100), max_size=80), block=st.sampled_from([64, 1 << 20]))
def test_any_string_records_round_trip_through_a_jsonl_build(tmp_path_factory, records, block):
    d = tmp_path_factory.mktemp("p")
    data = write(d / "x.jsonl", [jsonl_line(k, v) for k, v in records.items()])
    report = build_table(data, d / "x.kvt", block_size=block)
    assert report.records == len(records)
    with kv.open_table(d / "x.kvt") as t:
        assert {k.decode(): v for k, v in t.items()} == records
        for k, v in records.items():
            assert t.get(k) == v
    assert same_as_reference(d / "x.kvt", list(records.items()))


TSV_BAD = [
    (b"\n", "empty line"),
    (b"no tab here\n", "no TAB"),
    (b"\tvalue\n", "empty key"),
    (b"k" * 1025 + b"\tv\n", "1,025 bytes"),
    (b"\xff\xfe\tv\n", "not valid UTF-8"),
]


@pytest.mark.parametrize("line, reason", TSV_BAD)
def test_a_malformed_tsv_line_stops_the_build_naming_file_line_and_problem(tmp_path, line, reason):
    data = write(tmp_path / "d.tsv", [b"good\t1\n", line, b"also\t2\n"])
    with pytest.raises(DataFormatError) as e:
        build_table(data, tmp_path / "d.kvt")
    assert f"{data}:2:" in str(e.value) and reason in str(e.value)
    assert not (tmp_path / "d.kvt").exists()


JSONL_BAD = [
    (b"{not json}\n", "not valid JSON"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"value": "v"}\n', 'missing field "key"'),
    (b'{"key": 5, "value": "v"}\n', '"key" is not a string'),
    (b'{"key": "k"}\n', 'exactly one of "value" and "value_base64"'),
    (b'{"key": "k", "value": "v", "value_base64": "dg=="}\n', "exactly one of"),
    (b'{"key": "k", "value_base64": "%%%"}\n', "not valid base64"),
    (b'{"key": "k", "value": "v", "ttl": 3}\n', "unknown field 'ttl'"),
    (b'{"key": "\\ud800", "value": "v"}\n', "lone surrogate"),
    (b'{"key": "", "value": "v"}\n', "empty key"),
    (b'{"key": "k", "value": 7}\n', '"value" is not a string'),
    (b"\n", "empty line"),
]


@pytest.mark.parametrize("line, reason", JSONL_BAD)
def test_a_malformed_jsonl_line_stops_the_build_naming_file_line_and_problem(tmp_path, line, reason):
    data = write(tmp_path / "d.jsonl", [b'{"key": "good", "value": "1"}\n', line])
    with pytest.raises(DataFormatError) as e:
        build_table(data, tmp_path / "d.kvt")
    assert f"{data}:2:" in str(e.value) and reason in str(e.value)


@pytest.mark.parametrize("name, lines", [("d.tsv", [line for line, _ in TSV_BAD]), ("d.jsonl", [line for line, _ in JSONL_BAD])])
def test_skip_invalid_skips_every_bad_line_and_loses_nothing(tmp_path, name, lines):
    good = (
        [b"a\t1\n", b"b\t2\n", b"a\t3\n"] if name.endswith("tsv") else [jsonl_line("a", b"1"), jsonl_line("b", b"2"), jsonl_line("a", b"3")]
    )
    data = write(tmp_path / name, [good[0], *lines, good[1], good[2]])
    report = build_table(data, tmp_path / "d.kvt", BuildOptions(skip_invalid=True, on_duplicate="last"))
    assert report.skipped == len(lines) and report.duplicates == 1 and report.records == 2
    assert report.lines == report.records + report.skipped + report.duplicates
    assert [p.line for p in report.skipped_sample] == list(range(2, 2 + min(5, len(lines))))
    with kv.open_table(tmp_path / "d.kvt") as t:
        assert t.get("a") == b"3" and t.get("b") == b"2"


def test_a_duplicate_string_key_names_both_lines(tmp_path):
    data = write(tmp_path / "d.tsv", [b"x\t1\n", b"bad\n", b"y\t2\n", b"x\t3\n"])
    with pytest.raises(DuplicateKey, match=r"d.tsv:4: key x already appeared on line 1"):
        build_table(data, tmp_path / "d.kvt", BuildOptions(skip_invalid=True))


def test_keys_differing_only_in_case_are_two_keys(tmp_path):
    data = write(tmp_path / "d.tsv", [b"User:42\tupper\n", b"user:42\tlower\n"])
    build_table(data, tmp_path / "d.kvt")
    with kv.open_table(tmp_path / "d.kvt") as t:
        assert (t.get("User:42"), t.get("user:42"), len(t)) == (b"upper", b"lower", 2)


def test_crlf_in_tsv_is_reported_stripped_or_kept_as_for_uuid_files(tmp_path):
    data = write(tmp_path / "d.tsv", [b"k\tv\r\n"])
    with pytest.raises(DataFormatError, match="CR LF"):
        build_table(data, tmp_path / "a.kvt")
    build_table(data, tmp_path / "b.kvt", BuildOptions(strip_cr=True))
    build_table(data, tmp_path / "c.kvt", BuildOptions(keep_cr=True))
    with kv.open_table(tmp_path / "b.kvt") as b, kv.open_table(tmp_path / "c.kvt") as c:
        assert b.get("k") == b"v" and c.get("k") == b"v\r"


def test_the_format_comes_from_the_flag_or_the_file_name(tmp_path):
    data = write(tmp_path / "d.txt", [b"k\tv\n"])
    with pytest.raises(DataFormatError):  # a .txt file is read as UUID lines
        build_table(data, tmp_path / "a.kvt")
    report = build_table(data, tmp_path / "b.kvt", BuildOptions(format="tsv"))
    assert report.input_format == "tsv" and "format       tsv" in report.summary()


def test_a_sharded_string_build_puts_each_key_in_the_shard_of_its_hash(tmp_path):
    records = {f"key-{i}": str(i).encode() for i in range(2000)}
    data = write(tmp_path / "d.tsv", [f"{k}\t".encode() + v + b"\n" for k, v in records.items()])
    reports = build_shards(data, tmp_path / "d.kvt", 4)
    tables = [kv.open_table(r.table) for r in reports]
    assert sum(len(t) for t in tables) == len(records)
    for k, v in records.items():
        homes = [i for i, t in enumerate(tables) if t.get(k) is not None]
        assert homes == [string_shard_of(k.encode(), 4)] and tables[homes[0]].get(k) == v
    assert min(len(t) for t in tables) > 400  # even
    for t in tables:
        t.close()


def test_a_sharded_string_build_names_the_input_lines_of_a_duplicate(tmp_path):
    lines = [f"k{i}\t{i}\n".encode() for i in range(50)] + [b"k7\tagain\n"]
    data = write(tmp_path / "d.tsv", lines)
    with pytest.raises(DuplicateKey, match=r"d.tsv:51: key k7 already appeared on line 8"):
        build_shards(data, tmp_path / "d.kvt", 4)


@pytest.mark.parametrize(
    ("name", "line", "default"), [("d.tsv", b"user:%d\tv\n", 0.9), ("d.data", b"%08d-0000-4000-8000-000000000000 v\n", 0.8)]
)
def test_the_default_load_factor_is_the_key_kinds_and_a_given_one_wins(tmp_path, name, line, default):
    data = write(tmp_path / name, [line % i for i in range(1000)])
    for asked, expected in ((None, default), (0.5, 0.5)):
        build_table(data, tmp_path / "d.kvt", **({} if asked is None else {"load_factor": asked}))
        with kv.open_table(tmp_path / "d.kvt") as t:
            assert t.meta["options"]["load_factor"] == expected
            assert t.header.home_slots == math.ceil(1000 / expected)


def test_options_not_given_differ_from_no_table_of_either_kind_by_default():
    string = BuildOptions(format="tsv").for_data("d.tsv").recorded()
    uuid = BuildOptions().for_data("d.data").recorded()
    assert (string["load_factor"], uuid["load_factor"]) == (0.9, 0.8)
    assert BuildOptions().differences(string) == [] and BuildOptions().differences(uuid) == []
    assert BuildOptions(load_factor=0.8).differences(string) == ["--load-factor (table: 0.9, asked: 0.8)"]
    assert BuildOptions(format="tsv").for_data("d").flags() == ["--format", "tsv"]
    assert BuildOptions(format="tsv", load_factor=0.8).for_data("d").flags() == ["--load-factor", "0.8", "--format", "tsv"]
