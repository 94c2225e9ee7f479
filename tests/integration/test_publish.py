"""Publish, rollback, reload and the `current` pointer of a publish root."""

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import write_records
from serverutil import KV

import kv
from kv.publish import PublishError, current_generation, publish, read_history, reload, rollback


def data_file(path, n=200, tag=b"v1", seed=0):
    rnd = random.Random(seed)
    records = [(str(uuid.UUID(int=rnd.getrandbits(128), version=4)), b"value %d " % i + tag) for i in range(n)]
    return write_records(path, records), records


def generation_of(tmp_path, i):
    return data_file(tmp_path / f"{i}.data", tag=b"v%d" % i, seed=i)[0]


def quiet(msg):
    pass


def files_in(root):
    return sorted(p.name for p in (root / "generations").iterdir())


def run_kv(*args):
    return subprocess.run([KV, *map(str, args)], capture_output=True, text=True, timeout=60)


# -- publish ---------------------------------------------------------------------------------


def test_publish_data_builds_verifies_and_points_current(tmp_path):
    data, records = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    gen = publish(data, root, log=quiet)
    assert os.readlink(root / "current") == f"generations/{gen}.kvt"  # relative: the root may move
    with kv.open_table(root / "current") as t:
        assert t.generation == gen
        assert all(t.get(k) == v for k, v in records)
    assert read_history(root) == [gen]
    assert files_in(root) == [f"{gen}.kvt"]  # no temporary file left


def test_publish_a_table_copies_it_in_byte_for_byte(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    kv.build_table(data, tmp_path / "a.kvt")
    gen = publish(tmp_path / "a.kvt", tmp_path / "root", log=quiet)
    assert (tmp_path / "root" / "generations" / f"{gen}.kvt").read_bytes() == (tmp_path / "a.kvt").read_bytes()


def test_the_generation_is_the_content_checksum_so_a_rebuild_is_the_same_generation(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    kv.build_table(data, tmp_path / "a.kvt")
    with kv.open_table(tmp_path / "a.kvt") as t:
        expected = t.generation
    assert publish(data, tmp_path / "root", log=quiet) == expected


def test_publishing_the_current_generation_again_is_a_no_op_with_a_message(tmp_path):
    data, _ = data_file(tmp_path / "a.data")
    root = tmp_path / "root"
    gen = publish(data, root, log=quiet)
    before = os.lstat(root / "current").st_ino
    messages = []
    assert publish(data, root, log=messages.append) == gen
    assert any("already current" in m for m in messages)
    assert os.lstat(root / "current").st_ino == before  # the symlink was not even replaced
    assert read_history(root) == [gen]


@pytest.mark.parametrize("damage", ["truncate", "flip-record-byte", "flip-header-byte", "empty"])
def test_a_corrupt_or_truncated_table_is_refused_and_current_is_unchanged(tmp_path, damage):
    root = tmp_path / "root"
    good = publish(generation_of(tmp_path, 0), root, log=quiet)
    kv.build_table(generation_of(tmp_path, 1), tmp_path / "b.kvt")
    raw = bytearray((tmp_path / "b.kvt").read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "flip-record-byte":
        raw[len(raw) // 2] ^= 0x01  # only the full checksum sees it
    elif damage == "flip-header-byte":
        raw[20] ^= 0x01
    else:
        raw = raw[:8]  # the magic alone
    (tmp_path / "bad.kvt").write_bytes(bytes(raw))
    with pytest.raises(PublishError, match="refusing to publish"):
        publish(tmp_path / "bad.kvt", root, log=quiet)
    assert current_generation(root) == good
    assert read_history(root) == [good]
    assert files_in(root) == [f"{good}.kvt"]


def test_a_bad_data_file_is_refused_and_current_is_unchanged(tmp_path):
    root = tmp_path / "root"
    good = publish(generation_of(tmp_path, 0), root, log=quiet)
    bad = tmp_path / "bad.data"
    bad.write_bytes(b"this is not a record\n")
    with pytest.raises(kv.DataFormatError):
        publish(bad, root, log=quiet)
    assert current_generation(root) == good
    assert files_in(root) == [f"{good}.kvt"]


def test_published_files_are_readable_by_the_service_whatever_the_umask(tmp_path):
    root = tmp_path / "srv" / "root"
    old = os.umask(0o077)
    try:
        gen = publish(generation_of(tmp_path, 0), root, log=quiet)
    finally:
        os.umask(old)
    assert (root / "generations" / f"{gen}.kvt").stat().st_mode & 0o777 == 0o444  # and nobody writes it
    assert (root / "history.json").stat().st_mode & 0o777 == 0o644
    assert root.stat().st_mode & 0o777 == 0o755 and (root / "generations").stat().st_mode & 0o777 == 0o755


def test_a_missing_source_is_refused(tmp_path):
    with pytest.raises(PublishError, match="no such file"):
        publish(tmp_path / "nope.data", tmp_path / "root", log=quiet)
    assert current_generation(tmp_path / "root") is None


def test_a_damaged_copy_of_the_same_generation_is_replaced_not_kept(tmp_path):
    root = tmp_path / "root"
    data = generation_of(tmp_path, 0)
    gen = publish(data, root, log=quiet)
    publish(generation_of(tmp_path, 1), root, log=quiet)
    path = root / "generations" / f"{gen}.kvt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))  # bit rot on disk
    messages = []
    assert publish(data, root, log=messages.append) == gen
    assert any("replacing damaged" in m for m in messages)
    with kv.open_table(root / "current") as t:
        t.verify()


def test_leftovers_of_an_interrupted_publish_are_removed(tmp_path):
    root = tmp_path / "root"
    publish(generation_of(tmp_path, 0), root, log=quiet)
    (root / "generations" / ".incoming-999999.kvt").write_bytes(b"half a table")
    publish(generation_of(tmp_path, 1), root, log=quiet)
    assert not [n for n in files_in(root) if n.startswith(".")]


def test_a_damaged_history_stops_publish_before_any_change(tmp_path):
    root = tmp_path / "root"
    good = publish(generation_of(tmp_path, 0), root, log=quiet)
    (root / "history.json").write_text("{not json")
    with pytest.raises(PublishError, match="history.json is damaged"):
        publish(generation_of(tmp_path, 1), root, log=quiet)
    assert current_generation(root) == good


# -- rollback ---------------------------------------------------------------------------------


def test_rollback_restores_the_previous_generation_and_walks_back(tmp_path):
    root = tmp_path / "root"
    gens = [publish(generation_of(tmp_path, i), root, log=quiet) for i in range(3)]
    assert current_generation(root) == gens[2]
    assert rollback(root, log=quiet) == gens[1]
    assert current_generation(root) == gens[1]
    with kv.open_table(root / "current") as t:
        assert t.generation == gens[1]
    assert rollback(root, log=quiet) == gens[0]
    with pytest.raises(PublishError, match="no earlier generation"):
        rollback(root, log=quiet)
    assert current_generation(root) == gens[0]


def test_rollback_after_a_rollback_and_a_publish_returns_to_what_was_served_not_to_the_bad_one(tmp_path):
    root = tmp_path / "root"
    a, b, bad = (publish(generation_of(tmp_path, i), root, log=quiet) for i in range(3))
    rollback(root, log=quiet)  # bad -> b
    d = publish(generation_of(tmp_path, 3), root, log=quiet)
    assert read_history(root) == [a, b, d]
    assert rollback(root, log=quiet) == b


def test_rollback_skips_a_previous_generation_that_no_longer_verifies(tmp_path):
    root = tmp_path / "root"
    a, b, c = (publish(generation_of(tmp_path, i), root, log=quiet) for i in range(3))
    (root / "generations" / f"{b}.kvt").unlink()
    messages = []
    assert rollback(root, log=messages.append) == a
    assert any(f"skipping generation {b}" in m for m in messages)


def test_rollback_without_history_says_what_to_do(tmp_path):
    root = tmp_path / "root"
    publish(generation_of(tmp_path, 0), root, log=quiet)
    (root / "history.json").unlink()
    with pytest.raises(PublishError, match="kv publish .*ID.kvt"):
        rollback(root, log=quiet)
    with pytest.raises(PublishError, match="does not exist"):
        rollback(tmp_path / "empty", log=quiet)


def test_a_hand_made_current_becomes_the_rollback_target(tmp_path):
    root = tmp_path / "root"
    a = publish(generation_of(tmp_path, 0), root, log=quiet)
    (root / "history.json").unlink()
    publish(generation_of(tmp_path, 1), root, log=quiet)
    assert rollback(root, log=quiet) == a


# -- pruning ----------------------------------------------------------------------------------


def test_old_generations_are_pruned_to_the_keep_count(tmp_path):
    root = tmp_path / "root"
    gens = [publish(generation_of(tmp_path, i), root, keep=2, log=quiet) for i in range(5)]
    assert files_in(root) == sorted(f"{g}.kvt" for g in gens[2:])
    assert read_history(root) == gens[2:]
    assert rollback(root, log=quiet) == gens[3]  # the previous one always survives


def test_default_keep_is_three_besides_current(tmp_path):
    root = tmp_path / "root"
    gens = [publish(generation_of(tmp_path, i), root, log=quiet) for i in range(6)]
    assert files_in(root) == sorted(f"{g}.kvt" for g in gens[2:])


def test_a_generation_rolled_back_from_is_removed_at_the_next_publish(tmp_path):
    root = tmp_path / "root"
    a, bad = (publish(generation_of(tmp_path, i), root, log=quiet) for i in range(2))
    rollback(root, log=quiet)
    assert f"{bad}.kvt" in files_in(root)  # kept for inspection until then
    c = publish(generation_of(tmp_path, 2), root, log=quiet)
    assert files_in(root) == sorted([f"{a}.kvt", f"{c}.kvt"])


def test_keep_below_one_is_refused(tmp_path):
    with pytest.raises(PublishError, match="at least 1"):
        publish(generation_of(tmp_path, 0), tmp_path / "root", keep=0, log=quiet)
    r = run_kv("publish", generation_of(tmp_path, 0), "--root", tmp_path / "root", "--keep", "0")
    assert r.returncode == 2 and "at least 1" in r.stderr


# -- readers during publish -------------------------------------------------------------------


def test_readers_never_see_current_missing_or_incomplete_while_publishing(tmp_path):
    """Readers loop on readlink + open while another process publishes."""
    root = tmp_path / "root"
    publish(generation_of(tmp_path, 0), root, log=quiet)
    sources = [generation_of(tmp_path, i) for i in range(1, 5)]
    stop = threading.Event()
    problems, reads, seen = [], [0], set()

    def reader():
        while not stop.is_set():
            try:
                target = os.readlink(root / "current")
                with kv.open_table(root / "current") as t:  # header checks: a partial file fails here
                    len(t)
                    seen.add(t.generation)
                reads[0] += 1
                assert target.startswith("generations/")
            except Exception as e:  # noqa: BLE001
                problems.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for src in sources:  # a separate process: real concurrency with the readers
            r = run_kv("publish", src, "--root", root, "--keep", "10")
            assert r.returncode == 0, r.stderr
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []
    assert reads[0] > 100
    assert len(seen) >= 2


# -- command line -----------------------------------------------------------------------------


def test_cli_publish_prints_the_generation_and_one_line_per_step(tmp_path):
    root = tmp_path / "root"
    data = generation_of(tmp_path, 0)
    r = run_kv("publish", data, "--root", root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == current_generation(root)
    lines = r.stderr.splitlines()
    assert all(line.startswith("kv publish: ") for line in lines)
    assert any("verified generation" in line for line in lines) and any("current ->" in line for line in lines)
    r = run_kv("publish", data, "--root", root)
    assert r.returncode == 0 and "already current" in r.stderr


def test_cli_refuses_a_corrupt_table_with_exit_1(tmp_path):
    root = tmp_path / "root"
    good = publish(generation_of(tmp_path, 0), root, log=quiet)
    (tmp_path / "bad.kvt").write_bytes((root / "generations" / f"{good}.kvt").read_bytes()[:-1])
    r = run_kv("publish", tmp_path / "bad.kvt", "--root", root)
    assert r.returncode == 1 and "refusing to publish" in r.stderr and r.stdout == ""
    assert current_generation(root) == good


def test_cli_rollback(tmp_path):
    root = tmp_path / "root"
    a, b = (publish(generation_of(tmp_path, i), root, log=quiet) for i in range(2))
    r = run_kv("rollback", "--root", root)
    assert r.returncode == 0 and r.stdout.strip() == a and f"rolled back from {b}" in r.stderr
    r = run_kv("rollback", "--root", root)
    assert r.returncode == 1 and "no earlier generation" in r.stderr


FAKE_MASTER = """
import os, signal, sys, time
def hup(*_):
    open(sys.argv[1], "a").write("HUP\\n")
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
time.sleep(30)
"""


def test_reload_sends_sighup_to_the_pid_in_the_pid_file(tmp_path):
    log = tmp_path / "signals"
    # The fake master's command line names kv, as the real one's does.
    proc = subprocess.Popen([sys.executable, "-c", FAKE_MASTER, str(log), "kv"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        root = tmp_path / "root"
        root.mkdir()
        (root / "kv.pid").write_text(f"{proc.pid}\n")
        r = run_kv("reload", "--root", root, "--wait", "0")
        assert r.returncode == 0, r.stderr
        assert f"sent SIGHUP to kv master {proc.pid}" in r.stderr
        (tmp_path / "other.pid").write_text(str(proc.pid))
        assert reload(pid_file=str(tmp_path / "other.pid"), log=quiet) == proc.pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not log.exists() or log.read_text().count("HUP") < 2):
            time.sleep(0.02)
        assert log.read_text().count("HUP") == 2
    finally:
        proc.kill()
        proc.wait()


def test_reload_refuses_a_stale_or_foreign_pid_file_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    root = tmp_path / "root"
    root.mkdir()
    r = run_kv("reload", "--root", root)
    if not os.path.exists("/run/kv/kv.pid"):
        assert r.returncode == 1 and "no pid file found" in r.stderr and "systemctl reload kv" in r.stderr
    dead = subprocess.Popen(["true"])
    dead.wait()
    (root / "kv.pid").write_text(str(dead.pid))
    with pytest.raises(PublishError, match="not running"):
        reload(str(root), log=quiet)
    sleeper = subprocess.Popen([shutil.which("sleep"), "30"])
    try:
        (root / "kv.pid").write_text(str(sleeper.pid))
        with pytest.raises(PublishError, match="not a kv server"):
            reload(str(root), log=quiet)
        assert sleeper.poll() is None  # and it was not signalled
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    (root / "kv.pid").write_text("garbage")
    with pytest.raises(PublishError, match="does not hold a process id"):
        reload(str(root), log=quiet)


def test_reload_refuses_a_current_table_that_cannot_open_and_signals_nothing(tmp_path):
    root = tmp_path / "root"
    good = publish(generation_of(tmp_path, 0), root, log=quiet)
    raw = (root / "generations" / f"{good}.kvt").read_bytes()
    (root / "generations" / "bad.kvt").write_bytes(raw[:100])
    os.symlink("generations/bad.kvt", root / ".c")
    os.replace(root / ".c", root / "current")
    (root / "kv.pid").write_text(f"{os.getpid()}\n")  # were it signalled, this test process would die
    r = run_kv("reload", "--root", root, "--wait", "0")
    assert r.returncode == 1
    assert "not reloading" in r.stderr and "bad.kvt" in r.stderr and "kv rollback" in r.stderr


def test_publish_takes_the_build_options_of_kv_build(tmp_path):
    data, records = data_file(tmp_path / "a.data")
    with open(data, "ab") as f:
        f.write(b"not a record\n")
    root = tmp_path / "root"
    r = run_kv("publish", data, "--root", root)
    assert r.returncode == 1 and "not a record" in r.stderr
    r = run_kv("publish", data, "--root", root, "--skip-invalid", "--load-factor", "0.5")
    assert r.returncode == 0, r.stderr
    with kv.open_table(root / "current") as t:
        assert t.meta["options"]["skip_invalid"] is True and t.meta["options"]["load_factor"] == 0.5
        assert all(t.get(k) == v for k, v in records)


def test_reload_finds_the_pid_file_from_kv_pid_file(tmp_path):
    pid_file = tmp_path / "elsewhere.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(str(dead.pid))
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"} | {"KV_PID_FILE": str(pid_file)}
    r = subprocess.run([KV, "reload", "--wait", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and f"{pid_file} names process {dead.pid}, which is not running" in r.stderr
