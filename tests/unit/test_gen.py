"""The data generator: records like the reference sample, the same for a seed."""

import io
import re
import uuid
from collections import Counter

import pytest
from conftest import REFERENCE_DATA

import kv
from kv.build import build_table
from kv.gen import generate, generate_file

LINE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12} [a-z]{1,10}( [a-z]{1,10}){0,9}")


def gen_bytes(n: int, seed: int = 0, **kw) -> bytes:
    out = io.BytesIO()
    written = generate(n, out, seed=seed, **kw)
    assert written == len(out.getvalue())
    return out.getvalue()


@pytest.fixture(scope="module")
def sample():
    return gen_bytes(20_000, seed=4).splitlines()


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others():
    assert gen_bytes(3000, seed=1) == gen_bytes(3000, seed=1)
    assert gen_bytes(3000, seed=1) != gen_bytes(3000, seed=2)


def test_every_line_is_a_canonical_uuid4_a_space_and_lowercase_words(sample):
    assert len(sample) == 20_000
    for line in sample:
        assert LINE.fullmatch(line), line
        key = line[:36].decode()
        assert uuid.UUID(key).version == 4 and str(uuid.UUID(key)) == key


def test_keys_are_distinct(sample):
    assert len({line[:36] for line in sample}) == len(sample)


def test_word_counts_and_lengths_cover_one_to_ten_evenly(sample):
    counts = Counter(len(line[37:].split(b" ")) for line in sample)
    lengths = Counter(len(w) for line in sample for w in line[37:].split(b" "))
    letters = Counter(c for line in sample[:2000] for c in line[37:].replace(b" ", b""))
    assert sorted(counts) == sorted(lengths) == list(range(1, 11))
    assert min(counts.values()) > 0.8 * len(sample) / 10
    assert min(lengths.values()) > 0.8 * sum(lengths.values()) / 10
    assert sorted(letters) == list(b"abcdefghijklmnopqrstuvwxyz")


def test_values_look_like_the_reference_sample(sample):
    if not REFERENCE_DATA.exists():
        pytest.skip("no ../shared/reference/example.data here")

    def shape(lines):
        words = [line[37:].split(b" ") for line in lines]
        return (sum(map(len, words)) / len(words), sum(len(w) for ws in words for w in ws) / sum(map(len, words)))

    ref = REFERENCE_DATA.read_bytes().splitlines()
    assert all(LINE.fullmatch(line) for line in ref)  # the pattern above is the sample's
    (ref_words, ref_len), (our_words, our_len) = shape(ref), shape(sample)
    assert abs(ref_words - our_words) < 0.2 and abs(ref_len - our_len) < 0.2


@pytest.mark.parametrize("n,block", [(0, 10), (1, 10), (20, 7), (21, 7), (1000, 1000)])
def test_exactly_n_records_whatever_the_block(n, block):
    data = gen_bytes(n, block=block)
    assert data.count(b"\n") == n and (not data or data.endswith(b"\n"))


def test_generated_files_build_with_default_options(tmp_path):
    size = generate_file(5000, tmp_path / "g.data", seed=9)
    assert size == (tmp_path / "g.data").stat().st_size
    assert not list(tmp_path.glob("*.tmp-*"))
    report = build_table(tmp_path / "g.data", tmp_path / "g.kvt")
    assert report.records == report.lines == 5000 and report.skipped == report.duplicates == 0
    with kv.open_table(tmp_path / "g.kvt") as t:
        for line in (tmp_path / "g.data").read_bytes().splitlines()[:500]:
            assert t.get(line[:36]) == line[37:]


def test_string_keys_are_unique_tsv_lines_of_8_to_40_characters(tmp_path):
    from kv.gen import generate_file

    path = tmp_path / "s.tsv"
    generate_file(5000, path, seed=3, keys="string")
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5001
    keys = [line.split(b"\t", 1)[0] for line in lines[:-1]]
    assert len(set(keys)) == 5000
    assert min(map(len, keys)) == 8 and max(map(len, keys)) == 40
    assert all(b"\t" not in line.split(b"\t", 1)[1] for line in lines[:-1])
