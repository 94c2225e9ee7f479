"""Sharded builds: one pass, N tables, every record in exactly one of them."""

import os
import random
import uuid

import numpy as np
import pytest
from conftest import write_records

import kv
from kv.build import BuildOptions, build_table
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
    reports = build_shards(data, tmp_path / "d.kvt", 2, BuildOptions(on_duplicate="last"))
    t = kv.open_table(reports[shard_of(k.encode(), 2)].table)
    assert t.get(k) == b"y"
    assert sum(r.duplicates for r in reports) == 1


def test_invalid_lines_are_reported_once_not_per_shard(tmp_path):
    path = tmp_path / "bad.data"
    path.write_bytes(f"{uuid.uuid4()} ok\nnot-a-key value\n{uuid.uuid4()} ok2\n".encode())
    reports = build_shards(path, tmp_path / "b.kvt", 2, BuildOptions(skip_invalid=True))
    assert reports[0].skipped == 1 and reports[0].skipped_sample[0].line == 2
    assert sum(r.records for r in reports) == 2


@pytest.mark.parametrize("n", [0, 3, 512])
def test_shard_count_must_be_power_of_two_up_to_256(n):
    with pytest.raises(ValueError, match="power of two"):
        check_shard_count(n)


def test_shard_file_names():
    assert [p.name for p in shard_paths("x/t.kvt", 2)] == ["t.shard-0-of-2.kvt", "t.shard-1-of-2.kvt"]
    assert shard_paths("t.kvt", 16)[3].name == "t.shard-03-of-16.kvt"


@pytest.mark.parametrize("taken", ["table", "temporary file"])
def test_a_shard_that_cannot_be_written_leaves_no_table_and_no_temporary_file(tmp_path, taken):
    data = write_records(tmp_path / "d.data", [(str(uuid.uuid4()), b"v") for _ in range(50)])
    out = tmp_path / "out"
    out.mkdir()
    name = shard_paths(out / "t.kvt", 4)[2].name
    blocked = out / (name if taken == "table" else f".{name}.tmp-{os.getpid()}")
    blocked.mkdir()  # shard 2's file name is taken by a directory: its writer cannot start
    with pytest.raises(IsADirectoryError):
        build_shards(data, out / "t.kvt", 4)
    assert [p.name for p in out.iterdir()] == [blocked.name]  # shards 0 and 1 cleaned up


def test_a_shard_failing_at_the_end_leaves_no_table_and_no_temporary_file(tmp_path, monkeypatch):
    from kv.writer import TableWriter

    data = write_records(tmp_path / "d.data", [(str(uuid.uuid4()), b"v") for _ in range(50)])
    finish = TableWriter.finish

    def fail_on_the_last(self, *args, **kwargs):
        if self.shard[0] == self.shard[1] - 1:
            raise OSError(28, "No space left on device")
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(TableWriter, "finish", fail_on_the_last)
    with pytest.raises(OSError):
        build_shards(data, tmp_path / "t.kvt", 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.data"]


def test_sharded_tables_record_their_options_and_the_shard_count(gen_data, tmp_path):
    data, _ = gen_data
    options = BuildOptions(load_factor=0.5, on_duplicate="last")
    for r in build_shards(data, tmp_path / "s.kvt", 2, options):
        with kv.open_table(r.table) as t:
            assert t.meta["options"] == {**options.recorded(), "shards": 2}


def test_many_duplicates_are_traced_to_their_lines_in_one_pass_per_shard(tmp_path, monkeypatch):
    from kv import lines as lines_module
    from kv import shard

    rnd = random.Random(3)
    keys = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(300)]
    first = [f"{k.upper() if i % 2 else k} first" for i, k in enumerate(keys)]  # lines 1-300
    again = [f"{k} again" for k in keys]  # lines 302-601
    data = tmp_path / "d.data"
    data.write_text("\n".join(first + ["not a line"] + again) + "\n")
    passes = []
    real = lines_module.key_lines
    monkeypatch.setattr(shard, "key_lines", lambda *a, **k: passes.append(1) or real(*a, **k))
    reports = build_shards(data, tmp_path / "s.kvt", 4, BuildOptions(on_duplicate="first", skip_invalid=True))
    assert sum(r.duplicates for r in reports) == 300
    assert len(passes) == 4  # one per shard, however many duplicates
    line_of = {k: i + 1 for i, k in enumerate(keys)}
    for r in reports:
        assert len(r.duplicate_sample) == 5
        for p in r.duplicate_sample:
            key = p.reason.split()[1]
            assert p.line == 301 + line_of[key]
            assert p.reason == f"key {key} also on line {line_of[key]}; kept line {line_of[key]} (first)"


@pytest.mark.parametrize("block_size", [16, 40, 1 << 20])
def test_key_lines_finds_the_nth_line_of_a_key_in_any_case_past_skipped_lines(tmp_path, block_size):
    from kv.lines import SkippedLines, key_lines

    k = "3479d894-3271-4935-88cf-a06f3cbb80a5"
    other = "f8a24bb8-eff8-41dc-929b-10b4c3e49e05"
    text = (
        "\n".join(
            [
                f"{k} one",  # 1
                f"{other} value mentions {k} inside",  # 2
                f"{k.upper()} two",  # 3
                f"{k}\tnot a record",  # 4
                f"{k} skipped as too long (pretend)",  # 5
                f"{k} three",  # 6
            ]
        )
        + "\n"
    )
    data = tmp_path / "d.data"
    data.write_text(text)
    skipped = SkippedLines()
    skipped.add(np.array([4, 5]))
    found = key_lines(data, [(k.encode(), 0), (k.encode(), 1), (k.encode(), 2), (other.encode(), 0)], skipped, block_size)
    assert found == {(k.encode(), 0): 1, (k.encode(), 1): 3, (k.encode(), 2): 6, (other.encode(), 0): 2}


@pytest.mark.parametrize("shards", [1, 4])
def test_a_writer_stopped_while_being_made_leaves_no_temporary_file(tmp_path, monkeypatch, shards):
    """SIGTERM raises in the builder (kv/build.py): one arriving after a
    writer opened its file but before it was made removed nothing in a
    sharded build (and leaked the descriptor in any build)."""
    import kv.writer

    data = write_records(tmp_path / "d.data", [(str(uuid.uuid4()), b"v") for _ in range(50)])
    out = tmp_path / "out"
    out.mkdir()
    calls = [0]
    empty = np.empty

    def stopped(*args, **kwargs):  # the third array of the last writer made
        calls[0] += 1
        if calls[0] == 3 * shards:
            raise KeyboardInterrupt
        return empty(*args, **kwargs)

    monkeypatch.setattr(kv.writer.np, "empty", stopped)
    with pytest.raises(KeyboardInterrupt):
        if shards == 1:
            build_table(data, out / "t.kvt")
        else:
            build_shards(data, out / "t.kvt", shards)
    assert calls[0] == 3 * shards and list(out.iterdir()) == []
