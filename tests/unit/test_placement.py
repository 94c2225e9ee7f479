"""Slot placement (kv/placement.py) and the header (kv/writer.py) as pure
functions: the rules docs/FORMAT.md states, checked against a plain model."""

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from kv import format as fmt
from kv.errors import DataFormatError
from kv.placement import (
    equal_hash_runs,
    home_slot_count,
    place,
    positions,
    slot_blocks,
    sort_by_hash,
    to_hash32,
    value_bytes_of,
)
from kv.writer import header_bytes

hashes32 = st.lists(st.integers(0, 2**32 - 1), max_size=300).map(lambda h: np.array(sorted(h), dtype=np.uint32))


def linear_probing(h32, home_slots):
    """The model: each key, in hash order, takes the first free slot at or after its home."""
    taken, out = set(), []
    for h in h32.tolist():
        p = fmt.home_slot(h, home_slots)
        while p in taken:
            p += 1
        taken.add(p)
        out.append(p)
    return out


@settings(deadline=None)
@given(h32=hashes32, load=st.sampled_from([0.1, 0.5, 0.8, 0.95]))
def test_positions_are_linear_probing_in_hash_order(h32, load):
    home_slots = home_slot_count(len(h32), load)
    assert positions(h32, home_slots).tolist() == linear_probing(h32, home_slots)


@settings(deadline=None)
@given(h32=hashes32, load=st.sampled_from([0.5, 0.95]))
def test_layout_keeps_every_key_within_max_displacement_and_padding(h32, load):
    layout = place(h32, load)
    homes = (h32.astype(np.int64) * layout.home_slots) >> 32
    if len(h32):
        assert int((layout.positions - homes).max()) == layout.max_displacement
    assert layout.slot_count >= layout.home_slots + layout.max_displacement + 1
    assert layout.slot_count - max(fmt.WINDOW, layout.max_displacement + 1) >= (int(layout.positions[-1]) + 1 if len(h32) else 0)


@settings(deadline=None)
@given(h32=hashes32)
def test_the_slot_hash_column_is_sorted_and_holds_every_key(h32):
    checks = np.arange(len(h32), dtype=np.uint32)
    refs = np.arange(1, len(h32) + 1, dtype=np.uint64)
    layout = place(h32, 0.8)
    slots = np.concatenate(list(slot_blocks(h32, checks, refs, layout)))
    assert len(slots) == layout.slot_count
    assert (np.diff(slots["hash"].astype(np.int64)) >= 0).all()
    occupied = slots[slots["ref"] != 0]
    assert sorted(occupied["ref"].tolist()) == refs.tolist()
    empty = np.flatnonzero(slots["ref"] == 0)
    inside = empty[empty < layout.home_slots]
    # An empty home slot holds the smallest hash whose home it is.
    assert all(fmt.home_slot(int(slots["hash"][i]), layout.home_slots) == i for i in inside)
    assert (slots["hash"][empty[empty >= layout.home_slots]] == fmt.EMPTY_TAIL_HASH).all()


def test_too_many_records_for_one_table_say_build_shards():
    with pytest.raises(DataFormatError, match="shards"):
        home_slot_count(2_000_000_000, 0.8)
    assert home_slot_count(0, 0.8) == 1 and home_slot_count(8, 0.8) == 10


def test_sort_by_hash_keeps_equal_hashes_in_input_order():
    h64 = np.array([5, 3, 5, 1, 3], dtype=np.uint64)
    refs = np.array([10, 20, 30, 40, 50], dtype=np.uint64)
    checks = np.array([1, 2, 3, 4, 5], dtype=np.uint32)
    columns = [h64, refs, checks]
    sort_by_hash(columns)
    assert [c.tolist() for c in columns] == [[1, 3, 3, 5, 5], [40, 20, 50, 10, 30], [4, 2, 5, 1, 3]]
    assert equal_hash_runs(columns[0]) == [(1, 2), (3, 4)]
    assert to_hash32(np.array([0xABCDEF0112345678], dtype=np.uint64)).tolist() == [0xABCDEF01]


def test_value_bytes_are_the_record_lengths_less_key_and_space():
    refs = np.array([(4096 << 24) | 40, (5000 << 24) | 37], dtype=np.uint64)
    assert value_bytes_of(refs) == 3


def test_header_bytes_carry_their_own_checksum():
    header = fmt.Header(
        magic=fmt.MAGIC,
        version=fmt.VERSION,
        header_size=fmt.HEADER_SIZE,
        record_count=1,
        value_bytes=2,
        home_slots=3,
        slot_count=20,
        max_displacement=0,
        records_offset=4096,
        records_size=4096,
        slots_offset=8192,
        meta_offset=8512,
        meta_size=10,
        file_size=8522,
        content_checksum=99,
        shard_index=0,
        shard_count=1,
        header_checksum=0,
    )
    packed = header_bytes(header)
    assert len(packed) == fmt.HEADER.size
    back = fmt.Header.unpack(packed)
    assert back.header_checksum == xxhash.xxh3_64_intdigest(packed[: fmt.HEADER_CHECKSUM_AT])
    assert back.record_count == 1 and back.content_checksum == 99
