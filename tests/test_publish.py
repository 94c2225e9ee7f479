"""Publish, rollback and the `current` pointer of a publish root."""

import os
import subprocess
import threading
import uuid

import pytest

import kv
from conftest import write_records
from kv.publish import PublishError, current_generation, publish, read_history, rollback
from serverutil import KV


def data_file(path, n=200, tag=b"v1", seed=0):
    import random

    rnd = random.Random(seed)
    records = [(str(uuid.UUID(int=rnd.getrandbits(128), version=4)), b"value %d " % i + tag) for i in range(n)]
    return write_records(path, records), records


def quiet(msg):
    pass


def test_publish_data_builds_verifies_and_points_current(tmp_path):
    data, records = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    gen = publish(data, root, log=quiet)
    assert os.readlink(root / "current") == f"generations/{gen}.kvt"
    with kv.open_table(root / "current") as t:
        assert t.generation == gen
        assert t.get(records[0][0]) == records[0][1]
    assert read_history(root) == [gen]


def test_publish_a_table_copies_it_in(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    kv.build_table(data, tmp_path / "a.kvt")
    gen = publish(tmp_path / "a.kvt", tmp_path / "root", log=quiet)
    assert (tmp_path / "root" / "generations" / f"{gen}.kvt").read_bytes() == (tmp_path / "a.kvt").read_bytes()


def test_publishing_the_current_generation_again_changes_nothing(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    gen = publish(data, root, log=quiet)
    messages = []
    assert publish(data, root, log=messages.append) == gen
    assert any("already current" in m for m in messages)
    assert read_history(root) == [gen]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_table_is_refused_and_current_is_unchanged(tmp_path, damage):
    data, _ = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    good = publish(data, root, log=quiet)
    data2, _ = data_file(tmp_path / "b.data", tag=b"v2", seed=1)
    kv.build_table(data2, tmp_path / "b.kvt")
    raw = bytearray((tmp_path / "b.kvt").read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    else:
        raw[5000] ^= 0x01  # a record byte: only the full checksum sees it
    (tmp_path / "bad.kvt").write_bytes(bytes(raw))
    with pytest.raises(PublishError, match="refusing to publish"):
        publish(tmp_path / "bad.kvt", root, log=quiet)
    assert current_generation(root) == good
    assert [p.name for p in (root / "generations").iterdir()] == [f"{good}.kvt"]


def test_a_bad_data_file_is_refused_and_current_is_unchanged(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    good = publish(data, root, log=quiet)
    bad = tmp_path / "bad.data"
    bad.write_bytes(b"this is not a record\n")
    with pytest.raises(kv.DataFormatError):
        publish(bad, root, log=quiet)
    assert current_generation(root) == good
    assert not [p for p in (root / "generations").iterdir() if p.name.startswith(".")]


def test_rollback_restores_the_previous_generation(tmp_path):
    root = tmp_path / "root"
    gens = [publish(data_file(tmp_path / f"{i}.data", tag=b"v%d" % i, seed=i)[0], root, log=quiet) for i in range(3)]
    assert current_generation(root) == gens[2]
    assert rollback(root, log=quiet) == gens[1]
    assert current_generation(root) == gens[1]
    assert rollback(root, log=quiet) == gens[0]
    with pytest.raises(PublishError, match="no earlier generation"):
        rollback(root, log=quiet)
    assert current_generation(root) == gens[0]


def test_old_generations_are_pruned_to_the_keep_count(tmp_path):
    root = tmp_path / "root"
    gens = [publish(data_file(tmp_path / f"{i}.data", tag=b"v%d" % i, seed=i)[0], root, keep=2, log=quiet) for i in range(5)]
    assert sorted(p.stem for p in (root / "generations").iterdir()) == sorted(gens[2:])
    assert read_history(root) == gens[2:]


def test_readers_never_see_current_missing_while_publishing(tmp_path):
    root = tmp_path / "root"
    publish(data_file(tmp_path / "0.data")[0], root, log=quiet)
    stop = threading.Event()
    problems = []

    def reader():
        while not stop.is_set():
            try:
                with kv.open_table(root / "current") as t:
                    len(t)
            except Exception as e:  # noqa: BLE001
                problems.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 6):
            publish(data_file(tmp_path / f"{i}.data", tag=b"v%d" % i, seed=i)[0], root, keep=10, log=quiet)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []


def test_cli_publish_rollback_and_reload_errors(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    r = subprocess.run([KV, "publish", str(data), "--root", str(root)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == current_generation(root)
    r = subprocess.run([KV, "rollback", "--root", str(root)], capture_output=True, text=True)
    assert r.returncode == 1 and "no earlier generation" in r.stderr
    r = subprocess.run([KV, "reload", "--root", str(root)], capture_output=True, text=True)
    assert r.returncode == 1 and "no pid file" in r.stderr
