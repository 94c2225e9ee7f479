"""Reading tables: every key reads back its value, nothing else does."""

import random
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kv
from conftest import REFERENCE_DATA, write_records
from kv.build import build_table

values = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))
tables = st.dictionaries(st.uuids(version=4).map(str), values, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=tables, others=st.lists(st.uuids(), max_size=30), load=st.sampled_from([0.5, 0.8, 0.95]))
def test_every_key_reads_back_its_value_and_others_read_none(tmp_path_factory, records, others, load):
    d = tmp_path_factory.mktemp("prop")
    data = write_records(d / "p.data", records.items())
    build_table(data, d / "p.kvt", load_factor=load)
    with kv.open_table(d / "p.kvt") as t:
        assert len(t) == len(records)
        for k, v in records.items():
            assert t.get(k) == v
            assert t.get(k.upper()) == v
            assert t.get(k.replace("-", "")) == v
            assert k in t
        for u in others:
            if str(u) not in records:
                assert t.get(str(u)) is None
                assert str(u) not in t


def test_high_load_factor_displaces_keys_past_the_search_window(tmp_path):
    rnd = random.Random(5)
    records = {str(uuid.UUID(int=rnd.getrandbits(128), version=4)): b"v%d" % i for i in range(30000)}
    data = write_records(tmp_path / "h.data", records.items())
    build_table(data, tmp_path / "h.kvt", load_factor=0.95)
    with kv.open_table(tmp_path / "h.kvt") as t:
        assert t.header.max_displacement > 16
        assert all(t.get(k) == v for k, v in records.items())
        assert t.stats().max_probe == t.header.max_displacement + 1


def test_keys_sharing_the_slot_hash_are_told_apart(tmp_path):
    """Two real keys with the same top 32 hash bits (a birthday search finds a
    pair within ~100k keys) sit in adjacent slots; each reads its own value."""
    import xxhash

    rnd = random.Random(6)
    seen: dict[int, str] = {}
    pair = None
    while pair is None:
        k = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        h32 = xxhash.xxh3_64_intdigest(k.encode()) >> 32
        if h32 in seen:
            pair = (seen[h32], k)
        seen[h32] = k
    records = {pair[0]: b"first", pair[1]: b"second"}
    records.update({str(uuid.UUID(int=rnd.getrandbits(128), version=4)): b"x" for _ in range(1000)})
    data = write_records(tmp_path / "c.data", records.items())
    build_table(data, tmp_path / "c.kvt")
    with kv.open_table(tmp_path / "c.kvt") as t:
        assert t.get(pair[0]) == b"first" and t.get(pair[1]) == b"second"
        assert t.get(pair[1].upper()) == b"second"
        t.verify()


def test_empty_and_tiny_tables(tmp_path):
    for n in (0, 1, 2):
        recs = [(str(uuid.uuid4()), b"v%d" % i) for i in range(n)]
        data = write_records(tmp_path / f"{n}.data", recs)
        build_table(data, tmp_path / f"{n}.kvt")
        with kv.open_table(tmp_path / f"{n}.kvt") as t:
            assert len(t) == n
            assert all(t.get(k) == v for k, v in recs)
            assert t.get(str(uuid.uuid4())) is None
            t.verify()


def test_table_metadata(gen_table):
    path, records = gen_table
    with kv.open_table(path) as t:
        assert len(t) == len(records)
        assert t.value_bytes == sum(len(v) for _, v in records)
        assert t.meta["source"]["name"] == "gen.data"
        assert t.meta["records"] == len(records)
        assert len(t.generation) == 16
        assert dict((k.decode(), v) for k, v in t.items()) == dict(records)


def test_reference_sample_round_trips(tmp_path):
    import pytest

    if not REFERENCE_DATA.exists():
        pytest.skip("no ../shared/reference/example.data here")
    build_table(REFERENCE_DATA, tmp_path / "ref.kvt")
    with kv.open_table(tmp_path / "ref.kvt") as t, open(REFERENCE_DATA, "rb") as f:
        n = 0
        for line in f:
            k, _, v = line.rstrip(b"\n").partition(b" ")
            assert t.get(k) == v
            n += 1
        assert len(t) == n == 10_000
