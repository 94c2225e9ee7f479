"""Builder input rules: every line is in the table or reported, never dropped."""

import os
import re
import shutil
import uuid

import pytest
from conftest import write_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kv
from kv.build import MAX_LINE, BuildOptions, build_table
from kv.format import MAX_VALUE_LEN

K1, K2, K3 = (str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(3))


def build(tmp_path, content: bytes, block_size=4 << 20, **options):
    data = tmp_path / "in.data"
    data.write_bytes(content)
    report = build_table(data, tmp_path / "out.kvt", BuildOptions(**options), block_size=block_size)
    return report, kv.open_table(tmp_path / "out.kvt")


def no_table_left(tmp_path):
    return not (tmp_path / "out.kvt").exists() and not list(tmp_path.glob(".out.kvt.tmp-*"))


MALFORMED = [
    pytest.param(b"", "empty line", id="empty"),
    pytest.param(K1.encode() + b"value-without-space", "no space separating", id="no-space"),
    pytest.param(K1.encode(), "no space separating", id="key-only"),
    pytest.param(K1.encode() + b"\tvalue", "no space separating", id="tab"),
    pytest.param(b"not-a-uuid value", "characters long", id="bad-uuid"),
    pytest.param(K1[:8].encode() + b" value", "8 characters long", id="short-key"),
    pytest.param(K1[:-1].encode() + b" value", "35 characters long", id="key-one-short"),
    pytest.param(K1[:-1].encode() + b"g value", "not a hex digit", id="non-hex"),
    pytest.param(K1[:-1].encode() + b"\xc3 value", "not a hex digit", id="non-ascii"),
    pytest.param(K1.replace("-", "_").encode() + b" value", "expected '-'", id="underscores"),
    pytest.param((b"3479d89-43271-4935-88cf-a06f3cbb80a5 value"), "expected '-'", id="hyphen-moved"),
    pytest.param(K1.replace("-", "").encode() + b" value", "32 characters long", id="32-hex"),
    pytest.param(b" " + K1.encode() + b" value", "0 characters long", id="leading-space"),
]


@pytest.mark.parametrize("line,reason", MALFORMED)
def test_malformed_line_stops_the_build_naming_file_line_and_text(tmp_path, line, reason):
    content = f"{K2} ok\n".encode() + line + b"\n" + f"{K3} ok\n".encode()
    with pytest.raises(kv.DataFormatError, match=reason) as e:
        build(tmp_path, content)
    msg = str(e.value)
    assert re.match(rf"{re.escape(str(tmp_path / 'in.data'))}:2: ", msg)
    assert repr(line[:20])[2:-1] in msg  # the offending text, escaped
    assert no_table_left(tmp_path)


@pytest.mark.parametrize("line,reason", MALFORMED)
def test_skip_invalid_skips_each_malformed_line_and_reports_it(tmp_path, line, reason):
    content = f"{K2} ok\n".encode() + line + b"\n" + f"{K3} ok\n".encode()
    report, t = build(tmp_path, content, skip_invalid=True)
    assert (report.records, report.skipped, report.lines) == (2, 1, 3)
    assert report.skipped_sample[0].line == 2 and re.search(reason, report.skipped_sample[0].reason)
    assert t.get(K2) == t.get(K3) == b"ok" and len(t) == 2
    assert "skipped line 2" in report.summary()


def test_skip_invalid_reports_count_and_first_lines(tmp_path):
    good = [f"{uuid.uuid4()} v{i}".encode() for i in range(10)]
    lines = good[:3] + [b"bad one", b""] + good[3:] + [b"bad two"] * 10
    report, t = build(tmp_path, b"\n".join(lines) + b"\n", skip_invalid=True)
    assert report.skipped == 12 and report.records == 10
    assert [p.line for p in report.skipped_sample] == [4, 5, 13, 14, 15]
    assert "bad one" in report.skipped_sample[0].text
    assert report.lines == report.records + report.skipped + report.duplicates
    assert t.meta["skipped"] == 12


def test_the_first_problem_in_the_file_is_the_one_reported(tmp_path):
    content = f"{K1} a\njunk\n{K2} b\r\n{K3} ok\n".encode()
    for block_size in (1 << 20, 16, 64):
        with pytest.raises(kv.DataFormatError, match=r":2: no space"):
            build(tmp_path, content, block_size=block_size)
    content = f"{K1} a\n{K2} b\r\njunk\n".encode()
    for block_size in (1 << 20, 16):
        with pytest.raises(kv.DataFormatError, match=r":2: line ends with CR LF"):
            build(tmp_path, content, block_size=block_size)


def test_duplicate_key_stops_the_build_naming_both_lines(tmp_path):
    with pytest.raises(kv.DuplicateKey, match=rf"in.data:3: key {K1} already appeared on line 1; pass --on-duplicate"):
        build(tmp_path, f"{K1} a\n{K2} b\n{K1.upper()} c\n".encode())
    assert no_table_left(tmp_path)


def test_duplicate_error_names_the_first_repeat_in_the_file(tmp_path):
    keys = [str(uuid.uuid4()) for _ in range(50)]
    lines = [f"{k} x" for k in keys] + [f"{k} y" for k in reversed(keys)]
    with pytest.raises(kv.DuplicateKey, match=rf":51: key {keys[-1]} already appeared on line 50;"):
        build(tmp_path, ("\n".join(lines) + "\n").encode())


@pytest.mark.parametrize("policy,value,dropped_lines", [("first", b"a", [3, 5]), ("last", b"e", [1, 3])])
def test_duplicate_policy_keeps_the_chosen_value_and_reports(tmp_path, policy, value, dropped_lines):
    content = f"{K1} a\n{K2} b\n{K1} c\n{K3} d\n{K1.upper()} e\n".encode()
    report, t = build(tmp_path, content, on_duplicate=policy)
    assert t.get(K1) == value and t.get(K2) == b"b" and t.get(K3) == b"d"
    assert report.duplicates == 2 and report.records == 3 and len(t) == 3
    assert sorted(p.line for p in report.duplicate_sample) == dropped_lines
    assert all(policy in p.reason for p in report.duplicate_sample)
    assert t.meta["duplicates"] == 2
    assert t.value_bytes == 3


def test_duplicate_line_numbers_count_skipped_lines(tmp_path):
    with pytest.raises(kv.DuplicateKey, match=r":5: key .* already appeared on line 3"):
        build(tmp_path, f"garbage\n{K2} b\n{K1} a\n\n{K1} c\n".encode(), skip_invalid=True)


def test_crlf_is_reported_by_default_naming_the_first_crlf_line(tmp_path):
    with pytest.raises(kv.DataFormatError, match=r":2: line ends with CR LF.*--strip-cr.*--keep-cr"):
        build(tmp_path, f"{K1} a\n{K2} b\r\n{K3} c\r\n".encode())
    assert no_table_left(tmp_path)


def test_crlf_is_not_a_malformed_line_for_skip_invalid(tmp_path):
    with pytest.raises(kv.DataFormatError, match="CR LF"):
        build(tmp_path, f"{K1} a\r\n".encode(), skip_invalid=True)


def test_strip_cr_removes_only_the_final_cr(tmp_path):
    report, t = build(tmp_path, f"{K1} a\r\n{K2} b\rb\r\n{K3} c\n{uuid.UUID(int=9, version=4)} last\r".encode(), strip_cr=True)
    assert (t.get(K1), t.get(K2), t.get(K3)) == (b"a", b"b\rb", b"c")
    assert t.get(str(uuid.UUID(int=9, version=4))) == b"last"
    assert report.cr_stripped == 3 and "CR stripped" in report.summary()


def test_keep_cr_keeps_it_in_the_value(tmp_path):
    report, t = build(tmp_path, f"{K1} a\r\n{K2} \r\n".encode(), keep_cr=True)
    assert t.get(K1) == b"a\r" and t.get(K2) == b"\r" and report.cr_stripped == 0


def test_empty_file_builds_an_empty_table(tmp_path):
    report, t = build(tmp_path, b"")
    assert report.records == report.lines == 0 and len(t) == 0
    t.verify()


def test_a_lone_newline_is_one_empty_line(tmp_path):
    with pytest.raises(kv.DataFormatError, match=":1: empty line"):
        build(tmp_path, b"\n")
    report, t = build(tmp_path, b"\n", skip_invalid=True)
    assert (report.lines, report.skipped, len(t)) == (1, 1, 0)


def test_missing_final_newline_is_fine(tmp_path):
    report, t = build(tmp_path, f"{K1} a\n{K2} last".encode())
    assert t.get(K2) == b"last" and report.lines == 2
    with pytest.raises(kv.DataFormatError, match=":2: "):
        build(tmp_path, f"{K1} a\nunfinished".encode())


def test_upper_case_keys_are_canonicalised(tmp_path):
    _, t = build(tmp_path, f"{K1.upper()} a\n{K2.title()} b\n".encode())
    assert t.get(K1) == b"a" and t.get(K2) == b"b"
    assert sorted(k for k, _ in t.items()) == sorted([K1.encode(), K2.encode()])


def test_values_keep_spaces_empty_and_non_utf8_bytes(tmp_path):
    values = {K1: b"  spaced  out ", K2: b"", K3: b"\xff\xfe\x00\x01\t\r binary\x80"}
    _, t = build(tmp_path, b"".join(k.encode() + b" " + v + b"\n" for k, v in values.items()))
    assert {k: t.get(k) for k in values} == values


@pytest.mark.parametrize("block_size", [64 * 1024, 4 << 20])
def test_a_one_mib_value(tmp_path, block_size):
    big = bytes(range(256)).replace(b"\n", b"") * 4200
    assert len(big) > 1 << 20
    _, t = build(tmp_path, f"{K2} a\n{K1} ".encode() + big + f"\n{K3} c\n".encode(), block_size=block_size)
    assert t.get(K1) == big and t.get(K2) == b"a" and t.get(K3) == b"c"


def test_value_at_the_maximum_length_and_one_byte_over(tmp_path):
    at = b"a" * MAX_VALUE_LEN
    _, t = build(tmp_path, f"{K1} ".encode() + at + b"\n")
    assert t.get(K1) == at
    t.close()
    with pytest.raises(kv.DataFormatError, match=f":2: value is {MAX_VALUE_LEN + 1:,} bytes"):
        build(tmp_path, f"{K2} ok\n{K1} ".encode() + at + b"a\n")
    report, t = build(tmp_path, f"{K2} ok\n{K1} ".encode() + at + b"a\n" + f"{K3} ok\n".encode(), skip_invalid=True)
    assert report.skipped == 1 and report.skipped_sample[0].line == 2
    assert t.get(K2) == t.get(K3) == b"ok" and t.get(K1) is None


@pytest.mark.parametrize("block_size", [1 << 20, 32 << 20])
def test_a_line_longer_than_any_record_is_skipped_whatever_the_block_size(tmp_path, block_size):
    huge = f"{K1} ".encode() + b"x" * (MAX_LINE + (3 << 20)) + b"\n"
    content = f"{K2} before\n".encode() + huge + f"{K3} after\n".encode()
    with pytest.raises(kv.DataFormatError, match=":2: (line is longer|value is)"):
        build(tmp_path, content, block_size=block_size)
    report, t = build(tmp_path, content, skip_invalid=True, block_size=block_size)
    assert (report.lines, report.records, report.skipped) == (3, 2, 1)
    assert report.skipped_sample[0].line == 2
    assert t.get(K2) == b"before" and t.get(K3) == b"after" and t.get(K1) is None
    t.close()
    report, t = build(tmp_path, content[: -len(f"{K3} after\n")] + b"tail", skip_invalid=True, block_size=block_size)
    assert (report.lines, report.records, report.skipped) == (3, 1, 2)


def test_records_in_equal_records_stored_plus_reported(tmp_path):
    lines = []
    for i in range(300):
        r = i % 10
        if r == 0:
            lines.append(b"junk line %d" % i)
        elif r == 1:
            lines.append(f"{K1} dup {i}".encode())
        elif r == 2:
            lines.append(b"")
        else:
            lines.append(f"{uuid.uuid4()} v{i}".encode())
    report, t = build(tmp_path, b"\n".join(lines) + b"\n", skip_invalid=True, on_duplicate="last")
    assert report.lines == 300
    assert (report.skipped, report.duplicates) == (60, 29)
    assert report.records + report.skipped + report.duplicates == 300
    assert len(t) == report.records and t.get(K1) == b"dup 291"


# A reference model of the input rules, checked against the builder on random
# files: valid, malformed, CR-ended, duplicated and upper-case lines mixed.
KEYS = [str(uuid.UUID(int=i * 104729 + 7, version=4)) for i in range(12)]
line_st = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.booleans(), st.binary(max_size=30)).map(
        lambda t: (t[0].upper() if t[1] else t[0]).encode() + b" " + t[2].replace(b"\n", b"")
    ),
    st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from(KEYS).map(lambda k: k.encode()),
    st.just(b""),
)


def model(lines: list[bytes], skip_invalid, on_duplicate, cr):
    """What the builder must do: ('error', line number) or ('ok', table, skipped, duplicates, cr_stripped).
    Lines are checked as they stream in; duplicates only once all are read."""
    table, skipped, dups, stripped = {}, 0, 0, 0
    first_repeat = None
    for n, line in enumerate(lines, 1):
        if line.endswith(b"\r") and cr == "strip":
            line = line[:-1]
            ends_cr = True
        else:
            ends_cr = False
        try:
            valid = len(line) >= 37 and line[36:37] == b" " and len(kv.canonical_key(line[:36])) == 36 and line[8:9] == b"-"
        except kv.InvalidKey:
            valid = False
        if not valid:
            if not skip_invalid:
                return ("error", n)
            skipped += 1
            continue
        if line.endswith(b"\r") and cr == "error":
            return ("error", n)
        stripped += ends_cr
        key = kv.canonical_key(line[:36]).decode()
        if key in table:
            if on_duplicate == "error":
                first_repeat = first_repeat or n
                continue
            dups += 1
            if on_duplicate == "first":
                continue
        table[key] = line[37:]
    if first_repeat:
        return ("error", first_repeat)
    return ("ok", table, skipped, dups, stripped)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(line_st, max_size=40),
    crs=st.lists(st.booleans(), max_size=40),
    final_newline=st.booleans(),
    skip_invalid=st.booleans(),
    on_duplicate=st.sampled_from(["error", "first", "last"]),
    cr=st.sampled_from(["error", "strip", "keep"]),
    block_size=st.sampled_from([16, 64, 1000, 4 << 20]),
)
def test_builder_follows_the_input_rules_for_any_file(
    tmp_path_factory, lines, crs, final_newline, skip_invalid, on_duplicate, cr, block_size
):
    lines = [line + b"\r" if c else line for line, c in zip(lines, crs + [False] * len(lines), strict=False)]
    content = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    if lines and not final_newline and lines[-1] == b"":
        lines = lines[:-1]  # no bytes after the last newline: no last line
    d = tmp_path_factory.mktemp("rules")
    want = model(lines, skip_invalid, on_duplicate, cr)
    options = {
        "skip_invalid": skip_invalid,
        "on_duplicate": on_duplicate,
        "strip_cr": cr == "strip",
        "keep_cr": cr == "keep",
        "block_size": block_size,
    }
    if want[0] == "error":
        with pytest.raises(kv.DataFormatError, match=rf"in.data:{want[1]}: "):
            build(d, content, **options)
        assert no_table_left(d)
        return
    _, table, skipped, dups, stripped = want
    report, t = build(d, content, **options)
    with t:
        assert {k.decode(): v for k, v in t.items()} == table
        assert all(t.get(k) == v for k, v in table.items())
        assert (report.records, report.skipped, report.duplicates, report.cr_stripped) == (len(table), skipped, dups, stripped)
        assert report.lines == len(lines) == report.records + report.skipped + report.duplicates


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A file with every kind of line: valid, malformed, CRLF, duplicates, upper case."""
    d = tmp_path_factory.mktemp("messy")
    lines = []
    for i in range(600):
        k = str(uuid.UUID(int=i * 31337 + 5, version=4))
        kind = i % 7
        lines.append(
            {
                0: f"{k} plain {i}".encode(),
                1: f"{k.upper()} upper {i}".encode(),
                2: f"{k} crlf {i}\r".encode(),
                3: b"bad line %d" % i,
                4: f"{K1} dup {i}".encode(),
                5: f"{k} ".encode(),
                6: f"{k} \xff\xfe non-utf8 {i}".encode("latin-1"),
            }[kind]
        )
    data = d / "messy.data"
    data.write_bytes(b"\n".join(lines))
    return data


def test_same_input_and_options_give_a_byte_identical_table(messy, tmp_path):
    opts = BuildOptions(skip_invalid=True, on_duplicate="last", strip_cr=True)
    build_table(messy, tmp_path / "a.kvt", opts)
    build_table(messy, tmp_path / "b.kvt", opts)
    copy = tmp_path / "copy" / messy.name
    copy.parent.mkdir()
    shutil.copy2(messy, copy)  # same bytes, name and modification time
    build_table(copy, tmp_path / "c.kvt", opts)
    a = (tmp_path / "a.kvt").read_bytes()
    assert a == (tmp_path / "b.kvt").read_bytes() == (tmp_path / "c.kvt").read_bytes()


@pytest.mark.parametrize("block_size", [37, 64, 1000])
def test_block_boundaries_do_not_change_the_table_or_report(messy, tmp_path, block_size):
    opts = BuildOptions(skip_invalid=True, on_duplicate="first", strip_cr=True)
    default = build_table(messy, tmp_path / "default.kvt", opts)
    tiny = build_table(messy, tmp_path / "tiny.kvt", opts, block_size=block_size)
    assert (tmp_path / "default.kvt").read_bytes() == (tmp_path / "tiny.kvt").read_bytes()
    for field in ("records", "lines", "skipped", "duplicates", "cr_stripped", "value_bytes", "skipped_sample", "duplicate_sample"):
        assert getattr(default, field) == getattr(tiny, field), field


def test_generated_data_builds_identically_with_tiny_blocks(gen_data, tmp_path):
    data, records = gen_data
    build_table(data, tmp_path / "a.kvt")
    build_table(data, tmp_path / "b.kvt", block_size=256)
    assert (tmp_path / "a.kvt").read_bytes() == (tmp_path / "b.kvt").read_bytes()


def test_summary_names_records_duplicates_skipped_sizes_and_time(gen_data, tmp_path):
    data, records = gen_data
    report = build_table(data, tmp_path / "s.kvt")
    text = report.summary()
    for word in ("records", "duplicates", "skipped", "value bytes", "table bytes", "seconds"):
        assert word in text
    assert f"{len(records):,}" in text
    assert report.table_bytes == (tmp_path / "s.kvt").stat().st_size


def test_table_is_at_most_1_3x_the_input(gen_data, tmp_path):
    data, _ = gen_data
    report = build_table(data, tmp_path / "s.kvt")
    assert report.table_bytes <= 1.3 * data.stat().st_size


def test_default_output_name_replaces_the_suffix(tmp_path):
    data = write_records(tmp_path / "x.data", [(K1, b"a")])
    report = build_table(data)
    assert report.table == str(tmp_path / "x.kvt") and (tmp_path / "x.kvt").exists()


BAD_OPTIONS = [
    ({"on_duplicate": "newest"}, "--on-duplicate"),
    ({"load_factor": 0.99}, "--load-factor"),
    ({"load_factor": 0.05}, "--load-factor"),
    ({"load_factor": float("nan")}, "--load-factor"),
    ({"strip_cr": True, "keep_cr": True}, "exclude"),
]


@pytest.mark.parametrize("options,match", BAD_OPTIONS)
def test_bad_options_are_refused_naming_the_flag(options, match):
    with pytest.raises(ValueError, match=match):
        BuildOptions(**options)


@pytest.mark.parametrize("options,match", BAD_OPTIONS)
def test_bad_options_given_field_by_field_are_refused_before_anything_is_written(tmp_path, options, match):
    data = write_records(tmp_path / "in.data", [(K1, b"a")])
    with pytest.raises(ValueError, match=match):
        build_table(data, tmp_path / "out.kvt", **options)
    assert no_table_left(tmp_path)


def test_options_given_field_by_field_are_the_same_as_a_build_options(tmp_path):
    data = write_records(tmp_path / "in.data", [(K1, b"a\r")])
    build_table(data, tmp_path / "a.kvt", BuildOptions(keep_cr=True, load_factor=0.5))
    build_table(data, tmp_path / "b.kvt", keep_cr=True, load_factor=0.5)
    assert (tmp_path / "a.kvt").read_bytes() == (tmp_path / "b.kvt").read_bytes()
    with pytest.raises(TypeError):
        build_table(data, tmp_path / "c.kvt", load_facter=0.5)


def test_the_table_records_exactly_its_options(tmp_path):
    data = write_records(tmp_path / "in.data", [(K1, b"a")])
    options = BuildOptions(skip_invalid=True, on_duplicate="last", strip_cr=True, load_factor=0.5)
    build_table(data, tmp_path / "out.kvt", options)
    with kv.open_table(tmp_path / "out.kvt") as t:
        assert t.meta["options"] == options.recorded()
        assert BuildOptions.from_recorded(t.meta["options"]) == options.for_data(data)


def test_output_that_is_a_directory_is_refused(tmp_path):
    data = write_records(tmp_path / "in.data", [(K1, b"a")])
    (tmp_path / "out.kvt").mkdir()
    with pytest.raises(IsADirectoryError):
        build_table(data, tmp_path / "out.kvt")
    assert os.listdir(tmp_path / "out.kvt") == [] and not list(tmp_path.glob(".*tmp-*"))


def test_a_failed_rebuild_leaves_the_previous_table(tmp_path):
    build(tmp_path, f"{K1} old\n".encode())[1].close()
    before = (tmp_path / "out.kvt").read_bytes()
    with pytest.raises(kv.DataFormatError):
        build(tmp_path, f"{K1} new\nbroken\n".encode())
    assert (tmp_path / "out.kvt").read_bytes() == before
    assert not list(tmp_path.glob(".out.kvt.tmp-*"))


def run_kv_build(args, on_terminal: bool) -> tuple[int, bytes]:
    """`kv build ARGS` with stderr on a pseudo-terminal (as a person runs it) or a pipe."""
    import pty
    import subprocess
    import sys
    from pathlib import Path

    kv_bin = str(Path(sys.executable).parent / "kv")
    if not on_terminal:
        r = subprocess.run([kv_bin, "build", *map(str, args)], capture_output=True, timeout=60)
        return r.returncode, r.stderr
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    p = subprocess.Popen([kv_bin, "build", *map(str, args)], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return p.wait(60), out


def test_progress_bar_on_a_terminal_only(gen_data, tmp_path):
    data, _ = gen_data
    code, shown = run_kv_build([data, "-o", tmp_path / "t.kvt"], on_terminal=True)
    assert code == 0
    assert b"building" in shown and b"100%" in shown  # tqdm's bar, drawn to the terminal
    code, piped = run_kv_build([data, "-o", tmp_path / "p.kvt"], on_terminal=False)
    assert code == 0
    assert b"building" not in piped and b"%|" not in piped  # quiet in a pipe or a log: the summary only
    assert b"records" in piped and b"seconds" in piped


def test_one_crlf_line_is_named_in_the_singular(tmp_path):
    with pytest.raises(kv.DataFormatError, match=r"; 1 such line in this block\)"):
        build(tmp_path, f"{K1} a\r\n".encode())
    with pytest.raises(kv.DataFormatError, match=r"; 2 such lines in this block\)"):
        build(tmp_path, f"{K1} a\r\n{K2} b\r\n".encode())


def test_summary_counts_stripped_crs_in_the_singular_and_plural(tmp_path):
    report, t = build(tmp_path, f"{K1} a\r\n{K2} b\n".encode(), strip_cr=True)
    t.close()
    assert "CR stripped  1 line\n" in report.summary() + "\n"
    report, t = build(tmp_path, f"{K1} a\r\n{K2} b\r\n".encode(), strip_cr=True)
    t.close()
    assert "CR stripped  2 lines" in report.summary()


def test_duplicate_samples_name_input_lines_past_skipped_lines(tmp_path):
    lines = [b"junk"] * 3 + [f"{K1} a".encode(), b"", f"{K2} b".encode(), f"{K1} c".encode(), b"junk", f"{K1.upper()} d".encode()]
    report, t = build(tmp_path, b"\n".join(lines) + b"\n", skip_invalid=True, on_duplicate="last")
    t.close()
    assert sorted((p.line, p.reason) for p in report.duplicate_sample) == [
        (4, f"key {K1} also on line 9; kept line 9 (last)"),
        (7, f"key {K1} also on line 9; kept line 9 (last)"),
    ]
