"""Sharded builds: one pass, N tables, every record in exactly one of them."""

import uuid

import pytest

import kv
from conftest import write_records
from kv.build import build_table
from kv.keys import shard_of
from kv.shard import build_shards, check_shard_count, key_range, shard_paths


@pytest.mark.parametrize("shards", [2, 4, 16])
def test_every_record_lands_in_exactly_one_shard(gen_data, tmp_path, shards):
    data, records = gen_data
    reports = build_shards(data, tmp_path / "t.kvt", shards=shards)
    tables = [kv.open_table(r.table) for r in reports]
    assert sum(len(t) for t in tables) == len(records)
    for key, value in records[::7]:
        homes = [i for i, t in enumerate(tables) if t.get(key) is not None]
        assert homes == [shard_of(key.encode(), shards)]
        assert tables[homes[0]].get(key) == value


def test_union_of_shards_equals_unsharded_table(gen_data, tmp_path):
    data, _ = gen_data
    whole = build_table(data, tmp_path / "whole.kvt")
    reports = build_shards(data, tmp_path / "s.kvt", shards=8)
    union = {}
    for r in reports:
        with kv.open_table(r.table) as t:
            for k, v in t.items():
                assert k not in union
                union[k] = v
    with kv.open_table(whole.table) as t:
        assert dict(t.items()) == union


def test_shard_headers_record_index_count_and_key_range(gen_data, tmp_path):
    data, _ = gen_data
    reports = build_shards(data, tmp_path / "s.kvt", shards=4)
    for i, r in enumerate(reports):
        with kv.open_table(r.table) as t:
            assert (t.header.shard_index, t.header.shard_count) == (i, 4)
            assert (t.meta["shard"]["first_prefix"], t.meta["shard"]["last_prefix"]) == key_range(i, 4)
            for k, _ in t.items():
                assert key_range(i, 4)[0] <= k[:2].decode() <= key_range(i, 4)[1]


def test_shards_are_even_for_random_keys(gen_data, tmp_path):
    data, records = gen_data
    reports = build_shards(data, tmp_path / "s.kvt", shards=4)
    sizes = [r.records for r in reports]
    assert max(sizes) / min(sizes) < 1.1


def test_duplicate_across_the_file_names_both_lines(tmp_path):
    k = str(uuid.uuid4())
    data = write_records(tmp_path / "d.data", [(str(uuid.uuid4()), b"a"), (k, b"x"), (str(uuid.uuid4()), b"b"), (k.upper(), b"y")])
    with pytest.raises(kv.DuplicateKey, match=r":4: key .* already appeared on line 2"):
        build_shards(data, tmp_path / "d.kvt", shards=2)
    assert not list(tmp_path.glob("d.shard-*"))


def test_on_duplicate_last_keeps_last_value_in_its_shard(tmp_path):
    k = str(uuid.uuid4())
    data = write_records(tmp_path / "d.data", [(k, b"x"), (k, b"y")])
    reports = build_shards(data, tmp_path / "d.kvt", shards=2, on_duplicate="last")
    t = kv.open_table(reports[shard_of(k.encode(), 2)].table)
    assert t.get(k) == b"y"
    assert sum(r.duplicates for r in reports) == 1


def test_invalid_lines_are_reported_once_not_per_shard(tmp_path):
    path = tmp_path / "bad.data"
    path.write_bytes(f"{uuid.uuid4()} ok\nnot-a-key value\n{uuid.uuid4()} ok2\n".encode())
    reports = build_shards(path, tmp_path / "b.kvt", shards=2, skip_invalid=True)
    assert reports[0].skipped == 1 and reports[0].skipped_sample[0].line == 2
    assert sum(r.records for r in reports) == 2


@pytest.mark.parametrize("n", [0, 3, 512])
def test_shard_count_must_be_power_of_two_up_to_256(n):
    with pytest.raises(ValueError, match="power of two"):
        check_shard_count(n)


def test_shard_file_names():
    assert [p.name for p in shard_paths("x/t.kvt", 2)] == ["t.shard-0-of-2.kvt", "t.shard-1-of-2.kvt"]
    assert shard_paths("t.kvt", 16)[3].name == "t.shard-03-of-16.kvt"
