"""The write engine without HTTP: change log, head page, reader view, writer,
recovery, compaction and rollback on a root in a temporary directory."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kv import changelog
from kv.compact import compact, rollback
from kv.errors import InvalidKey
from kv.head import Head, head_path
from kv.live import LiveTable
from kv.publish import PublishError, current_generation
from kv.table import open_table
from kv.writes import Writer, WriteRefused, recover


def key(i: int) -> str:
    return str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % (1 << 128)))


def open_root(root, kind="uuid", **kw):
    recover(root, create_kind=kind, log_=lambda m: None)
    live = LiveTable(root)
    return live, Writer(live, background_compaction=False, **kw)


def state(live: LiveTable) -> dict:
    return dict(live.items())


def test_an_empty_writable_root_serves_nothing_and_names_its_base(tmp_path):
    live, _ = open_root(tmp_path / "r")
    assert live.keys == 0 and live.get(key(1)) is None
    assert live.generation == current_generation(tmp_path / "r")


def test_a_write_is_read_back_and_changes_the_generation(tmp_path):
    live, w = open_root(tmp_path / "r")
    g0 = live.generation
    c = w.write({key(1): b"one", key(2): b"two"})
    assert live.get(key(1)) == b"one" and live.get(key(2).upper()) == b"two"
    assert c.generation == live.generation != g0
    assert live.keys == 2 and live.value_bytes == 6


def test_another_reader_sees_the_write_at_its_next_refresh(tmp_path):
    live, w = open_root(tmp_path / "r")
    other = LiveTable(tmp_path / "r")
    w.write({key(1): b"x"})
    assert other.get(key(1)) is None  # not refreshed yet: the snapshot it had
    other.refresh()
    assert other.get(key(1)) == b"x" and other.generation == live.generation


def test_delete_of_an_absent_key_with_require_present_writes_nothing(tmp_path):
    live, w = open_root(tmp_path / "r")
    g = live.generation
    assert w.write(deletes=[key(5)], require_present=True) is None
    assert live.generation == g
    c = w.write(deletes=[key(5)])
    assert c.missing == [key(5).encode()]


def test_a_malformed_key_refuses_the_whole_write(tmp_path):
    live, w = open_root(tmp_path / "r")
    with pytest.raises(InvalidKey):
        w.write({key(1): b"a", "not-a-uuid": b"b"})
    assert live.keys == 0 and live.applied == changelog.HEADER_SIZE


def test_set_and_delete_of_one_key_in_one_write_is_refused(tmp_path):
    _, w = open_root(tmp_path / "r")
    with pytest.raises(WriteRefused):
        w.write({key(1): b"a"}, [key(1).upper()])


def test_more_keys_than_the_limit_is_413(tmp_path):
    _, w = open_root(tmp_path / "r", max_keys=2)
    with pytest.raises(WriteRefused) as e:
        w.write({key(i): b"v" for i in range(3)})
    assert e.value.status == 413


def test_string_roots_take_any_utf8_key(tmp_path):
    live, w = open_root(tmp_path / "r", kind="string")
    w.write({"user:42": b"\x00\xff", "ключ": b"v"})
    assert live.get("user:42") == b"\x00\xff" and live.get("ключ".encode()) == b"v"
    with pytest.raises(InvalidKey):
        w.write({"": b"x"})


def test_restart_keeps_every_acknowledged_write(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    for i in range(20):
        w.write({key(i): b"v%d" % i}, [key(i - 1)] if i else [])
    expected = state(live)
    gen = live.generation
    w.close()
    live.close()
    recover(root, log_=lambda m: None)
    again = LiveTable(root)
    assert state(again) == expected and again.generation == gen


def test_a_log_cut_at_every_byte_of_its_last_group_keeps_the_groups_before_it(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"first", key(2): b"first"})
    before = state(live)
    w.write({key(1): b"second", key(2): b"second", key(3): b"new"})
    st = live.head.read()[1]
    path = changelog.log_path(root, st.epoch)
    data = path.read_bytes()
    start = len(data) - len(
        changelog.encode_group(0, [(1, key(1).encode(), b"second"), (1, key(2).encode(), b"second"), (1, key(3).encode(), b"new")])
    )
    w.close()
    live.close()
    for cut in range(start, len(data)):
        path.write_bytes(data[:cut])
        recover(root, log_=lambda m: None)
        r = LiveTable(root)
        assert state(r) == before, cut
        r.close()
        assert path.stat().st_size == start  # the torn tail is gone from the file too
    path.write_bytes(data)
    recover(root, log_=lambda m: None)
    assert state(LiveTable(root))[key(3).encode()] == b"new"


def test_a_flipped_byte_in_the_last_group_is_dropped_not_served(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"a"})
    w.write({key(1): b"b"})
    path = changelog.log_path(root, live.epoch)
    data = bytearray(path.read_bytes())
    data[-12] ^= 0x01
    path.write_bytes(bytes(data))
    recover(root, log_=lambda m: None)
    assert LiveTable(root).get(key(1)) == b"a"


def test_a_writer_that_died_after_appending_leaves_nothing_visible(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"a"})
    path = changelog.log_path(root, live.epoch)
    with open(path, "ab") as f:  # appended and never made it into the head
        f.write(changelog.encode_group(99, [(1, key(2).encode(), b"ghost")])[:10])
    w.write({key(3): b"c"})
    other = LiveTable(root)
    assert other.get(key(2)) is None and other.get(key(3)) == b"c"
    recover(root, log_=lambda m: None)
    assert LiveTable(root).get(key(3)) == b"c"


def test_a_torn_head_is_rebuilt_by_the_next_writer(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"a"})
    h = Head(head_path(root), writable=True)
    c = h.counter()
    h.mm[16:24] = (c + 1).to_bytes(8, "little")  # odd: a writer died mid-update
    assert h.read() is None
    live.refresh()  # a reader neither blocks nor loses what it has
    assert live.get(key(1)) == b"a"
    w.write({key(2): b"b"})
    assert h.read() is not None and live.get(key(2)) == b"b" and live.get(key(1)) == b"a"


def test_compaction_folds_the_log_into_a_new_base_and_readers_switch(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    other = LiveTable(root)
    for i in range(50):
        w.write({key(i): b"v%d" % i})
    w.write(deletes=[key(3)])
    expected = state(live)
    old_base = live.base
    gen = compact(root, log=lambda m: None)
    assert gen and current_generation(root) == gen
    other.refresh()
    assert other.base == gen != old_base and other.pending == 0 and state(other) == expected
    with open_table(root / "current") as t:
        assert len(t) == 49
        t.verify()
    w.write({key(100): b"after"})  # the writer follows the new epoch
    other.refresh()
    assert other.get(key(100)) == b"after" and other.get(key(3)) is None


@pytest.mark.parametrize("kind", ["uuid", "string"])
def test_compaction_writes_the_base_at_kv_builds_load_factor_for_the_key_kind(tmp_path, kind):
    from kv.options import DEFAULT_LOAD_FACTORS

    live, w = open_root(tmp_path / "r", kind=kind)
    w.write({key(i): b"v" for i in range(900)})
    compact(tmp_path / "r", log=lambda m: None)
    with open_table(tmp_path / "r" / "current") as t:
        lf = t.meta["load_factor"]
    assert abs(lf - DEFAULT_LOAD_FACTORS[kind]) < 0.01, lf


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=5), min_size=1, max_size=8),
    chunk=st.integers(1, 2000),
)
def test_reading_a_log_in_chunks_gives_its_groups_and_finds_damage(tmp_path, sizes, chunk):
    body = b"".join(
        changelog.encode_group(seq, [(changelog.SET, key(seq * 10 + i).encode(), b"v" * n) for i, n in enumerate(values)])
        for seq, values in enumerate(sizes, 1)
    )
    path = tmp_path / "g.log"
    path.write_bytes(b"H" * 64 + body)
    fd = os.open(path, os.O_RDONLY)
    try:
        end = 64 + len(body)
        whole = changelog.read_groups(fd, 64, end)
        assert [g for groups in changelog.iter_groups(fd, 64, end, chunk=chunk) for g in groups] == whole
        with pytest.raises(changelog.ChangeLogCorrupt):  # the committed range cut inside its last group
            list(changelog.iter_groups(fd, 64, end - 1, chunk=chunk))
    finally:
        os.close(fd)
    damaged = bytearray(path.read_bytes())
    damaged[64 + len(body) // 2] ^= 1
    path.write_bytes(bytes(damaged))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(changelog.ChangeLogCorrupt):
            list(changelog.iter_groups(fd, 64, end, chunk=chunk))
    finally:
        os.close(fd)


def test_a_reader_that_cannot_replay_a_new_log_keeps_what_it_served(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    for i in range(20):
        w.write({key(i): b"before"})
    other = LiveTable(root)
    compact(root, log=lambda m: None)
    for i in range(20):
        w.write({key(i): b"after"})
    path = changelog.log_path(root, live.head.read()[1].epoch)
    damaged = bytearray(path.read_bytes())
    damaged[-12] ^= 1  # the new log's last group
    path.write_bytes(bytes(damaged))
    served = state(other), other.keys, other.value_bytes, other.pending, other.generation
    other.refresh()  # a new epoch: the reopen replays the new log and fails part way
    assert other.error
    assert (state(other), other.keys, other.value_bytes, other.pending, other.generation) == served


def test_the_protocol_lookup_of_a_root_follows_writes_deletes_and_compactions(tmp_path):
    from kv.http.fastpath import plain_lookup
    from kv.http.state import State

    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"one", key(2): b"two"})
    compact(root, log=lambda m: None)  # a base holding both, no changes pending
    reader = LiveTable(root)
    lookup = plain_lookup(State(reader, 100))
    assert reader.pending == 0 and lookup(key(1).encode()) == b"one"
    assert lookup(b"not-a-key") is None and lookup(key(9).encode()) is None
    w.write({key(1): b"uno"})  # another process's write: seen at the next lookup
    assert lookup(key(1).encode()) == b"uno" and lookup(key(2).encode()) == b"two"
    # Other spellings find the same keys; malformed ones find nothing.
    assert lookup(key(1).upper().encode()) == b"uno" and lookup(key(2).replace("-", "").encode()) == b"two"
    assert lookup(b"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz") is None and lookup(key(9).encode()) is None
    w.write(deletes=[key(2)])
    assert lookup(key(2).encode()) is None
    compact(root, log=lambda m: None)  # a new base, the overlay empty again
    w.write({key(3): b"three"})
    compact(root, log=lambda m: None)
    assert lookup(key(1).encode()) == b"uno" and lookup(key(2).encode()) is None and lookup(key(3).encode()) == b"three"
    assert reader.pending == 0


def test_writes_committed_during_compaction_are_carried_into_the_new_log(tmp_path, monkeypatch):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"before"})
    import kv.merge as km

    # A write committed between the table build and the switch.

    real_write = km.write_table

    def build_then_write(*a, **kw):
        gen = real_write(*a, **kw)
        w.write({key(2): b"during"})
        return gen

    monkeypatch.setattr(km, "write_table", build_then_write)
    compact(root, log=lambda m: None)
    live.refresh()
    assert live.get(key(1)) == b"before" and live.get(key(2)) == b"during" and live.pending == 1
    w.close()
    live.close()
    recover(root, log_=lambda m: None)
    assert LiveTable(root).get(key(2)) == b"during"


def test_rollback_refuses_to_discard_writes_unless_forced(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"a"})
    before = state(live)
    compact(root, log=lambda m: None)
    w.write({key(2): b"b"})
    with pytest.raises(PublishError, match="discard 1 write"):
        rollback(root, log=lambda m: None)
    rollback(root, force=True, log=lambda m: None)
    live.refresh()
    assert state(live) == before


def test_rollback_of_a_compaction_without_new_writes_needs_no_force(tmp_path):
    root = tmp_path / "r"
    live, w = open_root(root)
    w.write({key(1): b"a"})
    g = live.generation
    compact(root, log=lambda m: None)
    rollback(root, log=lambda m: None)
    live.refresh()
    assert live.get(key(1)) == b"a" and live.generation == g
    w.write({key(2): b"b"})
    assert live.generation != g


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.dictionaries(st.integers(0, 15), st.binary(max_size=8).filter(lambda b: b"\n" not in b), min_size=1, max_size=4),
        ),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 15), min_size=1, max_size=3, unique=True)),
        st.tuples(st.just("compact"), st.none()),
        st.tuples(st.just("restart"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_any_sequence_of_writes_compactions_and_restarts_matches_a_dict(tmp_path_factory, program):
    root = tmp_path_factory.mktemp("model") / "r"
    live, w = open_root(root)
    model: dict = {}
    for op, arg in program:
        if op == "set":
            w.write({key(i): v for i, v in arg.items()})
            model.update({key(i).encode(): v for i, v in arg.items()})
        elif op == "delete":
            w.write(deletes=[key(i) for i in arg])
            for i in arg:
                model.pop(key(i).encode(), None)
        elif op == "compact":
            compact(root, log=lambda m: None)
        else:
            w.close()
            live.close()
            recover(root, log_=lambda m: None)
            live = LiveTable(root)
            w = Writer(live, background_compaction=False)
        live.refresh()
        assert state(live) == model
        assert live.keys == len(model) and live.value_bytes == sum(map(len, model.values()))
    w.close()
    live.close()
    assert not any(n.startswith(".") and "tmp" in n for n in os.listdir(root / "generations"))


def test_writes_are_refused_while_compaction_is_far_behind(tmp_path):
    live, w = open_root(tmp_path / "r", compact_changes=3)
    for i in range(12):
        w.write({key(i): b"v"})
    with pytest.raises(WriteRefused) as e:
        w.write({key(99): b"v"})
    assert e.value.status == 503 and live.get(key(99)) is None
    compact(tmp_path / "r", log=lambda m: None)
    w.write({key(99): b"v"})
    assert live.get(key(99)) == b"v"


def test_a_reader_that_cannot_apply_the_log_keeps_its_state_says_why_and_retries(tmp_path, monkeypatch):
    import kv.live

    root = tmp_path / "r"
    live, w = open_root(root)
    other = LiveTable(root)
    w.write({key(1): b"a"})
    path = changelog.log_path(root, live.epoch)
    good = path.read_bytes()
    bad = bytearray(good)
    bad[-12] ^= 1  # damage the committed group
    path.write_bytes(bytes(bad))
    monkeypatch.setattr(kv.live, "RETRY_SECONDS", 0.05)
    other.refresh()
    assert other.error and other.get(key(1)) is None
    path.write_bytes(good)
    other.refresh()  # within the retry pause: nothing tried
    assert other.error
    import time

    time.sleep(0.06)
    other.refresh()
    assert not other.error and other.get(key(1)) == b"a"
