"""A damaged table is refused or raises TableCorrupt; it never crashes the
process, hangs, or returns a value that was not in the data."""

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

import kv
from conftest import write_records
from kv import format as fmt
from kv.build import build_table
from serverutil import KV


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    d = tmp_path_factory.mktemp("corrupt")
    rnd = random.Random(8)
    records = {str(uuid.UUID(int=rnd.getrandbits(128), version=4)): b"value %d" % i for i in range(300)}
    data = write_records(d / "c.data", records.items())
    build_table(data, d / "c.kvt")
    return d / "c.kvt", records


def damaged(tmp_path, src, edit) -> "Path":
    raw = bytearray(src.read_bytes())
    edit(raw)
    out = tmp_path / f"d{random.random()}.kvt"
    out.write_bytes(bytes(raw))
    return out


def reads_nothing_wrong(path, records):
    """Every lookup gives the right value, None, or TableCorrupt."""
    try:
        t = kv.open_table(path)
    except kv.TableCorrupt:
        return "refused"
    with t:
        for k, v in records.items():
            try:
                got = t.get(k)
            except kv.TableCorrupt:
                continue
            assert got in (v, None), f"{k}: got {got!r}, stored {v!r}"
        for _ in range(50):
            try:
                assert t.get(str(uuid.uuid4())) is None
            except kv.TableCorrupt:
                pass
    return "opened"


def test_truncation_anywhere_is_refused_at_open(table, tmp_path):
    path, _ = table
    size = path.stat().st_size
    cuts = sorted(set(range(0, size, 4096)) | {random.Random(1).randrange(size) for _ in range(30)} | {size - 1})
    for cut in cuts:
        p = damaged(tmp_path, path, lambda raw: raw.__delitem__(slice(cut, None)))
        with pytest.raises(kv.TableCorrupt):
            kv.open_table(p)
        p.unlink()


def test_appended_bytes_are_refused(table, tmp_path):
    path, _ = table
    p = damaged(tmp_path, path, lambda raw: raw.extend(b"\0" * 10))
    with pytest.raises(kv.TableCorrupt, match="header says"):
        kv.open_table(p)


@pytest.mark.parametrize("offset", range(0, fmt.HEADER.size))
def test_any_flipped_header_byte_is_refused(table, tmp_path, offset):
    path, _ = table
    p = damaged(tmp_path, path, lambda raw: raw.__setitem__(offset, raw[offset] ^ 0x40))
    with pytest.raises(kv.TableCorrupt):
        kv.open_table(p)


def test_foreign_and_empty_files_are_refused(tmp_path):
    for content in (b"", b"hello", b"KVTABLE\x00" + b"\x00" * 5000, os.urandom(9000), b"x" * 4096):
        p = tmp_path / "f.kvt"
        p.write_bytes(content)
        with pytest.raises(kv.TableCorrupt):
            kv.open_table(p)


def test_other_version_is_refused_with_its_number(table, tmp_path):
    path, _ = table
    import xxhash

    def bump(raw):
        raw[8:12] = (2).to_bytes(4, "little")
        raw[fmt.HEADER_CHECKSUM_AT : fmt.HEADER.size] = xxhash.xxh3_64_intdigest(bytes(raw[: fmt.HEADER_CHECKSUM_AT])).to_bytes(8, "little")

    with pytest.raises(kv.TableCorrupt, match="version 2"):
        kv.open_table(damaged(tmp_path, path, bump))


def test_flipped_slot_and_record_bytes_never_give_a_wrong_value(table, tmp_path):
    path, records = table
    with kv.open_table(path) as t:
        h = t.header
    rnd = random.Random(2)
    regions = [(h.records_offset, h.records_offset + h.records_size), (h.slots_offset, h.slots_offset + h.slot_count * 16)]
    for _ in range(150):
        lo, hi = rnd.choice(regions)
        at, bit = rnd.randrange(lo, hi), 1 << rnd.randrange(8)
        p = damaged(tmp_path, path, lambda raw: raw.__setitem__(at, raw[at] ^ bit))
        reads_nothing_wrong(p, records)
        p.unlink()


def test_garbage_record_offsets_raise_table_corrupt(table, tmp_path):
    path, records = table
    with kv.open_table(path) as t:
        h = t.header
        slots = [i for i in range(h.slot_count) if fmt.SLOT.unpack_from(t._mm, h.slots_offset + 16 * i)[2]]
        keys_at = {}
        for i in slots[:40]:
            _, _, ref = fmt.SLOT.unpack_from(t._mm, h.slots_offset + 16 * i)
            off = ref >> fmt.LEN_BITS
            keys_at[i] = t._mm[off : off + 36].decode()
    rnd = random.Random(3)
    for i, key in keys_at.items():
        garbage = rnd.choice([h.file_size + 100, 1 << 39, h.slots_offset, 0x10, h.records_offset + 1])
        length = rnd.choice([37, 100, 0xFFFFFF])

        def edit(raw, i=i):
            at = h.slots_offset + 16 * i + 8
            raw[at : at + 8] = ((garbage << fmt.LEN_BITS) | length).to_bytes(8, "little")

        p = damaged(tmp_path, path, edit)
        with kv.open_table(p) as t:
            with pytest.raises(kv.TableCorrupt):
                t.get(key)
            assert reads_nothing_wrong(p, records) == "opened"
        p.unlink()


def test_verify_detects_every_flipped_byte_in_slots_and_records(table, tmp_path):
    path, _ = table
    with kv.open_table(path) as t:
        h = t.header
        t.verify()
    rnd = random.Random(4)
    positions = [rnd.randrange(h.records_offset, h.records_offset + h.records_size) for _ in range(25)]
    positions += [rnd.randrange(h.slots_offset, h.slots_offset + 16 * h.slot_count) for _ in range(25)]
    positions += [rnd.randrange(fmt.HEADER.size, fmt.HEADER_SIZE) for _ in range(5)]
    for at in positions:
        p = damaged(tmp_path, path, lambda raw: raw.__setitem__(at, raw[at] ^ 0x01))
        with pytest.raises(kv.TableCorrupt):
            with kv.open_table(p) as t:
                t.verify()
        p.unlink()


def _build_in_subprocess(data, out):
    return subprocess.Popen([KV, "build", str(data), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def big_data(tmp_path_factory):
    from kv.gen import generate_file

    p = tmp_path_factory.mktemp("big") / "big.data"
    generate_file(1_500_000, p, seed=5)
    return p


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_build_leaves_no_file_under_the_final_name(big_data, tmp_path, sig):
    out = tmp_path / "big.kvt"
    proc = _build_in_subprocess(big_data, out)
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob(".big.kvt.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(sig)
    proc.wait(30)
    assert proc.returncode != 0, "the build finished before it was killed; use more data"
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert not list(tmp_path.glob(".big.kvt.tmp-*")), "SIGTERM cleans up the temporary file"


def test_a_killed_rebuild_leaves_the_previous_table_untouched(big_data, tmp_path):
    out = tmp_path / "big.kvt"
    out.write_bytes(b"previous table bytes")
    proc = _build_in_subprocess(big_data, out)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert out.read_bytes() == b"previous table bytes"
