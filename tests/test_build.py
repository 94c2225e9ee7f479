"""Builder input rules: every line is in the table or reported, never dropped."""

import uuid

import pytest

import kv
from conftest import write_records
from kv.build import build_table
from kv.format import MAX_VALUE_LEN

K1, K2, K3 = (str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(3))


def build(tmp_path, content: bytes, **options):
    data = tmp_path / "in.data"
    data.write_bytes(content)
    report = build_table(data, tmp_path / "out.kvt", **options)
    return report, kv.open_table(tmp_path / "out.kvt")


@pytest.mark.parametrize("line,reason", [
    (b"", "empty line"),
    (K1.encode() + b"value-without-space", "no space separating"),
    (b"not-a-uuid value", "characters long"),
    (K1[:-1].encode() + b"g value", "not a hex digit"),
    (K1.replace("-", "_").encode() + b" value", "expected '-'"),
    (K1.replace("-", "").encode() + b" value", "32 characters long"),
    (K1[:8].encode() + b" value", "8 characters long"),
])
def test_malformed_line_stops_the_build_naming_file_line_and_text(tmp_path, line, reason):
    content = f"{K2} ok\n".encode() + line + b"\n" + f"{K3} ok\n".encode()
    with pytest.raises(kv.DataFormatError, match=reason) as e:
        build(tmp_path, content)
    msg = str(e.value)
    assert f"in.data:2:" in msg
    assert not (tmp_path / "out.kvt").exists()


def test_skip_invalid_reports_count_and_first_lines(tmp_path):
    good = [f"{uuid.uuid4()} v{i}".encode() for i in range(10)]
    lines = good[:3] + [b"bad one", b""] + good[3:] + [b"bad two"] * 10
    report, t = build(tmp_path, b"\n".join(lines) + b"\n", skip_invalid=True)
    assert report.skipped == 12 and report.records == 10
    assert [p.line for p in report.skipped_sample] == [4, 5, 13, 14, 15]
    assert "bad one" in report.skipped_sample[0].text
    assert report.lines == report.records + report.skipped + report.duplicates
    assert t.meta["skipped"] == 12


def test_duplicate_key_stops_the_build_naming_both_lines(tmp_path):
    with pytest.raises(kv.DuplicateKey, match=r"in.data:3: key .* already appeared on line 1"):
        build(tmp_path, f"{K1} a\n{K2} b\n{K1.upper()} c\n".encode())


@pytest.mark.parametrize("policy,value", [("first", b"a"), ("last", b"c")])
def test_duplicate_policy_keeps_the_chosen_value_and_reports(tmp_path, policy, value):
    report, t = build(tmp_path, f"{K1} a\n{K2} b\n{K1} c\n".encode(), on_duplicate=policy)
    assert t.get(K1) == value and t.get(K2) == b"b"
    assert report.duplicates == 1 and report.records == 2
    assert report.duplicate_sample[0].line == (3 if policy == "first" else 1)


def test_duplicate_line_numbers_count_skipped_lines(tmp_path):
    with pytest.raises(kv.DuplicateKey, match=r":4: key .* already appeared on line 2"):
        build(tmp_path, f"garbage\n{K1} a\n{K2} b\n{K1} c\n".encode(), skip_invalid=True)


def test_crlf_is_reported_by_default(tmp_path):
    with pytest.raises(kv.DataFormatError, match="CR LF.*--strip-cr"):
        build(tmp_path, f"{K1} a\r\n{K2} b\r\n".encode())


def test_strip_cr_removes_it(tmp_path):
    report, t = build(tmp_path, f"{K1} a\r\n{K2} b\r\n{K3} c\n".encode(), strip_cr=True)
    assert (t.get(K1), t.get(K2), t.get(K3)) == (b"a", b"b", b"c")
    assert report.cr_stripped == 2


def test_keep_cr_keeps_it_in_the_value(tmp_path):
    _, t = build(tmp_path, f"{K1} a\r\n".encode(), keep_cr=True)
    assert t.get(K1) == b"a\r"


def test_empty_file_builds_an_empty_table(tmp_path):
    report, t = build(tmp_path, b"")
    assert report.records == 0 and len(t) == 0
    t.verify()


def test_missing_final_newline_is_fine(tmp_path):
    _, t = build(tmp_path, f"{K1} a\n{K2} last".encode())
    assert t.get(K2) == b"last"


def test_upper_case_keys_are_canonicalised(tmp_path):
    _, t = build(tmp_path, f"{K1.upper()} a\n".encode())
    assert t.get(K1) == b"a"
    assert list(k for k, _ in t.items()) == [K1.encode()]


def test_values_keep_spaces_empty_and_non_utf8_bytes(tmp_path):
    values = {K1: b"  spaced  out ", K2: b"", K3: b"\xff\xfe\x00\x01\t\r binary"}
    _, t = build(tmp_path, b"".join(k.encode() + b" " + v + b"\n" for k, v in values.items()))
    assert {k: t.get(k) for k in values} == values


def test_a_one_mib_value(tmp_path):
    big = bytes(range(256)).replace(b"\n", b"") * 4200
    _, t = build(tmp_path, f"{K1} ".encode() + big + b"\n", block_size=64 * 1024)
    assert t.get(K1) == big


def test_value_at_the_maximum_length_and_one_byte_over(tmp_path):
    at = b"a" * MAX_VALUE_LEN
    _, t = build(tmp_path, f"{K1} ".encode() + at + b"\n")
    assert t.get(K1) == at
    with pytest.raises(kv.DataFormatError, match="value is|longer than"):
        build(tmp_path, f"{K1} ".encode() + at + b"a\n")
    report, t = build(tmp_path, f"{K1} ".encode() + at + b"a\n" + f"{K2} ok\n".encode(), skip_invalid=True)
    assert report.skipped == 1 and t.get(K2) == b"ok" and t.get(K1) is None


def test_records_in_equal_records_stored_plus_reported(tmp_path):
    lines = []
    for i in range(300):
        r = i % 10
        if r == 0:
            lines.append(b"junk line %d" % i)
        elif r == 1:
            lines.append(f"{K1} dup {i}".encode())
        else:
            lines.append(f"{uuid.uuid4()} v{i}".encode())
    report, t = build(tmp_path, b"\n".join(lines) + b"\n", skip_invalid=True, on_duplicate="last")
    assert report.lines == 300
    assert report.records + report.skipped + report.duplicates == 300
    assert len(t) == report.records and t.get(K1) == b"dup 291"


def test_same_input_and_options_give_a_byte_identical_table(gen_data, tmp_path):
    data, _ = gen_data
    build_table(data, tmp_path / "a.kvt")
    build_table(data, tmp_path / "b.kvt")
    build_table(data, tmp_path / "c.kvt", block_size=1000)  # block boundaries do not matter either
    a = (tmp_path / "a.kvt").read_bytes()
    assert a == (tmp_path / "b.kvt").read_bytes() == (tmp_path / "c.kvt").read_bytes()


def test_tiny_blocks_handle_lines_spanning_blocks(tmp_path):
    recs = [(str(uuid.uuid4()), b"value number %d" % i) for i in range(200)]
    data = write_records(tmp_path / "d.data", recs)
    build_table(data, tmp_path / "d.kvt", block_size=64)
    with kv.open_table(tmp_path / "d.kvt") as t:
        assert all(t.get(k) == v for k, v in recs)


def test_summary_names_records_duplicates_skipped_sizes_and_time(gen_data, tmp_path):
    data, records = gen_data
    report = build_table(data, tmp_path / "s.kvt")
    text = report.summary()
    for word in ("records", "duplicates", "skipped", "value bytes", "table bytes", "seconds"):
        assert word in text
    assert f"{len(records):,}" in text


def test_table_is_at_most_1_3x_the_input(gen_data, tmp_path):
    data, _ = gen_data
    report = build_table(data, tmp_path / "s.kvt")
    assert report.table_bytes <= 1.3 * data.stat().st_size
