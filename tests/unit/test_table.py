"""Reading tables: every key reads back its value, nothing else does."""

import random
import uuid

import numpy as np
import pytest
import xxhash
from conftest import REFERENCE_DATA, write_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kv
from kv.build import build_table
from kv.gen import generate

# Any bytes but the newline, empty included (a trailing CR is a value byte
# under --keep-cr, which is how such a value gets into a table).
values = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))
tables = st.dictionaries(st.uuids(version=4).map(str), values, max_size=300)
fixture_ok = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def uuid4s(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n)]


def table_of(directory, records: dict, **options) -> kv.Table:
    data = write_records(directory / "t.data", records.items())
    build_table(data, directory / "t.kvt", **options)
    return kv.open_table(directory / "t.kvt")


@settings(fixture_ok, max_examples=60)
@given(records=tables, others=st.lists(st.uuids(), max_size=30), load=st.sampled_from([0.5, 0.8, 0.95]))
def test_every_key_reads_back_its_value_in_every_form_and_others_read_none(tmp_path_factory, records, others, load):
    with table_of(tmp_path_factory.mktemp("prop"), records, load_factor=load, keep_cr=True) as t:
        assert len(t) == len(records)
        for k, v in records.items():
            assert t.get(k) == v
            assert t.get(k.upper()) == v
            assert t.get(k.replace("-", "")) == v
            assert t.get(k.replace("-", "").upper()) == v
            assert t.get(k.encode()) == v
            assert k in t and t[k] == v
        for u in others:
            if str(u) not in records:
                assert t.get(str(u)) is None
                assert t.get(u.hex) is None
                assert str(u) not in t


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    records = {k: b"value %d" % i for i, k in enumerate(uuid4s(500, 11))}
    t = table_of(tmp_path_factory.mktemp("small"), records)
    yield t, records
    t.close()


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40),
        st.from_regex(r"\A[0-9a-fA-FgG-]{30,38}\Z"),
        st.integers(),
        st.none(),
        st.floats(),
        st.lists(st.integers(), max_size=3),
    )
)
def test_any_key_reads_a_value_none_or_raises_invalid_key(small_table, key):
    t, records = small_table
    try:
        got = t.get(key)
    except kv.InvalidKey:
        return
    canonical = kv.canonical_key(key).decode()  # a key that reads must be valid
    assert got == records.get(canonical)


def test_a_prefix_or_extension_of_a_key_is_not_that_key(small_table):
    t, records = small_table
    k, v = next(iter(records.items()))
    for n in range(36):
        with pytest.raises(kv.InvalidKey):
            t.get(k[:n])
    for longer in (k + " ", k + " " + v.decode(), k + "0"):
        with pytest.raises(kv.InvalidKey):
            t.get(longer)


def test_keys_of_other_types_and_encodings(small_table):
    t, records = small_table
    k, v = next(iter(records.items()))

    class Key(str):
        pass

    assert t.get(Key(k)) == v
    assert t.get(bytearray(k.encode())) == v
    assert t.get(memoryview(k.encode())) == v
    for bad in (None, 123, 1.5, [k], "\ud800" * 36, k[:-1] + "\u00e9"):
        with pytest.raises(kv.InvalidKey):
            t.get(bad)
        assert bad not in t


@pytest.fixture(scope="module")
def colliding(tmp_path_factory):
    """Real UUID4 keys whose xxh3 hashes share the top 32 bits (the slot hash):
    a birthday search over 300,000 generated keys finds about ten such pairs."""
    d = tmp_path_factory.mktemp("coll")
    with open(d / "many.data", "wb") as f:
        generate(300_000, f, seed=3)
    keys = [line[:36] for line in (d / "many.data").read_bytes().splitlines()]
    h32 = np.fromiter((xxhash.xxh3_64_intdigest(k) >> 32 for k in keys), dtype=np.uint64, count=len(keys))
    order = np.argsort(h32, kind="stable")
    same = np.flatnonzero(h32[order][1:] == h32[order][:-1])
    pairs = [(keys[order[i]].decode(), keys[order[i + 1]].decode()) for i in same]
    assert len(pairs) >= 3, "the birthday search found too few pairs"
    return pairs


@pytest.mark.parametrize("load", [0.5, 0.95])
def test_keys_sharing_the_slot_hash_each_read_their_own_value(tmp_path, colliding, load):
    records = {}
    for i, (a, b) in enumerate(colliding):
        records[a], records[b] = b"first %d" % i, b"second %d" % i
    records.update(dict.fromkeys(uuid4s(3000, 12), b"filler"))
    with table_of(tmp_path, records, load_factor=load) as t:
        for a, b in colliding:
            assert xxhash.xxh3_64_intdigest(a.encode()) >> 32 == xxhash.xxh3_64_intdigest(b.encode()) >> 32
            assert t.get(a) == records[a] and t.get(b) == records[b]
            assert t.get(a.upper()) == records[a] and t.get(b.replace("-", "")) == records[b]
        t.verify()


def test_an_absent_key_sharing_a_present_keys_slot_hash_reads_none(tmp_path, colliding):
    present = {a: b"here" for a, _ in colliding}
    present.update(dict.fromkeys(uuid4s(500, 13), b"filler"))
    with table_of(tmp_path, present) as t:
        for a, b in colliding:
            assert t.get(a) == b"here"
            assert t.get(b) is None
            assert t.get(b.upper()) is None
            assert b not in t


def test_high_load_factor_displaces_keys_past_sixteen_slots(tmp_path):
    records = {k: b"v%d" % i for i, k in enumerate(uuid4s(30000, 5))}
    with table_of(tmp_path, records, load_factor=0.95) as t:
        assert t.header.max_displacement > 16
        assert all(t.get(k) == v for k, v in records.items())
        assert all(t.get(k) is None for k in uuid4s(3000, 55))
        assert t.stats().max_probe == t.header.max_displacement + 1


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_tables(tmp_path, n):
    records = {k: b"v%d" % i for i, k in enumerate(uuid4s(n, 14))}
    with table_of(tmp_path, records) as t:
        assert len(t) == n
        assert all(t.get(k) == v and t.get(k.upper()) == v for k, v in records.items())
        assert all(t.get(k) is None for k in uuid4s(200, 15))
        assert {k.decode(): v for k, v in t.items()} == records
        t.verify()


def test_table_metadata(gen_table):
    path, records = gen_table
    with kv.open_table(path) as t:
        assert len(t) == len(records)
        assert t.value_bytes == sum(len(v) for _, v in records)
        assert t.file_bytes == path.stat().st_size
        assert t.source["name"] == "gen.data"
        assert t.meta["records"] == len(records)
        assert len(t.generation) == 16
        assert {k.decode(): v for k, v in t.items()} == dict(records)


def test_mapping_protocol_and_get_canonical(small_table):
    t, records = small_table
    k, v = next(iter(records.items()))
    assert t[k.upper()] == v
    with pytest.raises(KeyError):
        t[str(uuid.uuid4())]
    assert "not a key" not in t
    assert t.get_canonical(k.replace("-", "").upper()) == (k.encode(), v)
    with pytest.raises(kv.InvalidKey):
        t.get_canonical("nope")


def test_a_closed_table_refuses_lookups(tmp_path):
    t = table_of(tmp_path, {str(uuid.uuid4()): b"x"})
    t.close()
    with pytest.raises(ValueError, match="closed"):
        t.get(str(uuid.uuid4()))


def test_stats_after_verify_let_the_table_close(gen_table):
    path, _ = gen_table
    t = kv.open_table(path)
    t.verify()
    s = t.stats()
    assert 1 <= s.mean_probe <= s.max_probe and 0 < s.load_factor <= 0.8
    t.close()  # no numpy view of the map outlives verify or stats


def test_missing_table_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kv.open_table(tmp_path / "nope.kvt")


def test_reference_sample_round_trips(tmp_path):
    if not REFERENCE_DATA.exists():
        pytest.skip("no ../shared/reference/example.data here")
    build_table(REFERENCE_DATA, tmp_path / "ref.kvt")
    with kv.open_table(tmp_path / "ref.kvt") as t, open(REFERENCE_DATA, "rb") as f:
        n = 0
        for line in f:
            k, _, v = line.rstrip(b"\n").partition(b" ")
            assert t.get(k) == v
            assert t.get(k.decode().upper()) == v
            n += 1
        assert len(t) == n == 10_000
        t.verify()
