"""A damaged table is refused or raises TableCorrupt; it never crashes the
process, hangs, or returns a value that was not in the data. A build that is
killed or fails never leaves a file under the final name."""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
import xxhash
from conftest import write_records
from serverutil import KV

import kv
from kv import format as fmt
from kv.build import build_table

_xxh3 = xxhash.xxh3_64_intdigest


def make_table(directory, n: int, seed: int):
    rnd = random.Random(seed)
    records = {str(uuid.UUID(int=rnd.getrandbits(128), version=4)): b"value %d" % i for i in range(n)}
    data = write_records(directory / "c.data", records.items())
    build_table(data, directory / "c.kvt")
    return directory / "c.kvt", records


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_table(tmp_path_factory.mktemp("corrupt"), 300, 8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Small enough to damage every byte of its slots and records, one at a time."""
    return make_table(tmp_path_factory.mktemp("tiny"), 12, 9)


def header_of(path) -> fmt.Header:
    return fmt.Header.unpack(path.read_bytes()[: fmt.HEADER.size])


def slot_ref(raw, h, i):
    return fmt.SLOT.unpack_from(raw, h.slots_offset + 16 * i)


def used_slots(raw, h):
    return [i for i in range(h.slot_count) if slot_ref(raw, h, i)[2]]


def records_end(raw, h) -> int:
    """End of the last record (the records region is padded to a page)."""
    end = h.records_offset
    for i in used_slots(raw, h):
        ref = slot_ref(raw, h, i)[2]
        end = max(end, (ref >> fmt.LEN_BITS) + (ref & fmt.LEN_MASK) + 1)  # and the newline
    return end


def damaged(tmp_path, src, edit):
    raw = bytearray(src.read_bytes())
    edit(raw)
    out = tmp_path / f"d{random.random()}.kvt"
    out.write_bytes(bytes(raw))
    return out


def reseal(raw: bytearray, content=False, **fields):
    """Set header fields and recompute the header checksum (and, with content,
    the content checksum) so the damage gets past the checks meant to catch it."""
    h = dataclasses.replace(fmt.Header.unpack(raw), **fields)
    if content:
        h = dataclasses.replace(h, content_checksum=_xxh3(bytes(raw[fmt.HEADER_SIZE :])))
    packed = h.pack()
    raw[: fmt.HEADER.size] = packed[: fmt.HEADER_CHECKSUM_AT] + _xxh3(packed[: fmt.HEADER_CHECKSUM_AT]).to_bytes(8, "little")


def reads_nothing_wrong(path, records, misses=20):
    """Every lookup gives the stored value, None, or TableCorrupt."""
    try:
        t = kv.open_table(path)
    except kv.TableCorrupt:
        return "refused"
    with t:
        for k, v in records.items():
            for form in (k, k.upper()):
                try:
                    got = t.get(form)
                except kv.TableCorrupt:
                    continue
                assert got in (v, None), f"{k}: got {got!r}, stored {v!r}"
        for _ in range(misses):
            try:
                assert t.get(str(uuid.uuid4())) is None
            except kv.TableCorrupt:
                pass
    return "opened"


# -- refused at open -----------------------------------------------------------


def test_truncation_anywhere_is_refused_at_open(table, tmp_path):
    path, _ = table
    size = path.stat().st_size
    rnd = random.Random(1)
    cuts = sorted(set(range(0, size, 4096)) | {rnd.randrange(size) for _ in range(40)} | {size - 1, fmt.HEADER.size - 1})
    for cut in cuts:
        p = damaged(tmp_path, path, lambda raw, cut=cut: raw.__delitem__(slice(cut, None)))
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


def test_a_directory_or_fifo_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    code = "import kv, sys\nfor p in sys.argv[1:]:\n    try: kv.open_table(p)\n    except kv.TableCorrupt as e: print(e)\n"
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "fifo"), str(tmp_path / "dir")], capture_output=True, text=True, timeout=30
    )
    assert r.stdout.count("not a regular file") == 2, r.stderr


def test_other_version_is_refused_with_its_number(table, tmp_path):
    path, _ = table
    with pytest.raises(kv.TableCorrupt, match="version 7"):
        kv.open_table(damaged(tmp_path, path, lambda raw: reseal(raw, version=7)))


def test_a_uuid_table_relabelled_as_string_keys_is_refused(table, tmp_path):
    """Version 2 is known, but the metadata still says format 1: the header
    and the metadata must agree on the record layout."""
    path, _ = table
    with pytest.raises(kv.TableCorrupt, match="header says format version 2, the metadata 1"):
        kv.open_table(damaged(tmp_path, path, lambda raw: reseal(raw, version=2)))


IMPOSSIBLE_HEADERS = {
    "file size": lambda h: {"file_size": h.file_size - 1},
    "header size": lambda h: {"header_size": 8192},
    "records before header": lambda h: {"records_offset": 0},
    "records past the file": lambda h: {"records_size": h.file_size},
    "slots misaligned": lambda h: {"slots_offset": h.slots_offset + 16},
    "slots overlap records": lambda h: {"slots_offset": h.records_offset},
    "slots past the file": lambda h: {"slot_count": h.slot_count * 4},
    "no home slots": lambda h: {"home_slots": 0},
    "home slots beyond slots": lambda h: {"home_slots": h.slot_count},
    "displacement beyond slots": lambda h: {"max_displacement": h.slot_count},
    "displacement huge": lambda h: {"max_displacement": (1 << 64) - 1},
    "more records than slots": lambda h: {"record_count": h.slot_count + 1},
    "metadata past the file": lambda h: {"meta_size": h.meta_size + 1},
    "records misaligned": lambda h: {"records_offset": h.records_offset + 16, "records_size": h.records_size - 16},
    "shard index": lambda h: {"shard_index": 1, "shard_count": 1},
    "no shards": lambda h: {"shard_count": 0},
}


@pytest.mark.parametrize("damage", IMPOSSIBLE_HEADERS, ids=list(IMPOSSIBLE_HEADERS))
def test_impossible_header_fields_are_refused_even_with_a_valid_header_checksum(table, tmp_path, damage):
    path, _ = table
    fields = IMPOSSIBLE_HEADERS[damage](header_of(path))
    with pytest.raises(kv.TableCorrupt):
        kv.open_table(damaged(tmp_path, path, lambda raw: reseal(raw, **fields)))


@pytest.mark.parametrize("meta", [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b'{"a": ' * 50_000])
def test_unreadable_metadata_is_refused(table, tmp_path, meta):
    path, _ = table
    h = header_of(path)

    def edit(raw):
        del raw[h.meta_offset :]
        raw.extend(meta)
        reseal(raw, meta_size=len(meta), file_size=len(raw))

    with pytest.raises(kv.TableCorrupt, match="metadata"):
        kv.open_table(damaged(tmp_path, path, edit))


# -- damage found on lookup -----------------------------------------------------


def test_every_flipped_slot_or_record_byte_never_gives_a_wrong_value(tiny, tmp_path):
    path, records = tiny
    h = header_of(path)
    original = path.read_bytes()
    rnd = random.Random(2)
    positions = list(range(h.records_offset, records_end(original, h)))
    positions += list(range(h.slots_offset, h.slots_offset + 16 * h.slot_count))
    out = tmp_path / "flip.kvt"
    outcomes = set()
    for at in positions:
        raw = bytearray(original)
        raw[at] ^= rnd.randrange(1, 256)
        out.write_bytes(raw)
        outcomes.add(reads_nothing_wrong(out, records, misses=5))
    assert outcomes == {"opened"}  # opening stays O(1): it does not read slots or records


def test_random_flips_in_a_larger_table_never_give_a_wrong_value(table, tmp_path):
    path, records = table
    h = header_of(path)
    rnd = random.Random(3)
    regions = [(h.records_offset, h.records_offset + h.records_size), (h.slots_offset, h.slots_offset + h.slot_count * 16)]
    for _ in range(100):
        lo, hi = rnd.choice(regions)
        at, bit = rnd.randrange(lo, hi), 1 << rnd.randrange(8)
        p = damaged(tmp_path, path, lambda raw, at=at, bit=bit: raw.__setitem__(at, raw[at] ^ bit))
        reads_nothing_wrong(p, records)
        p.unlink()


def test_garbage_record_offsets_raise_table_corrupt(table, tmp_path):
    path, records = table
    raw0 = path.read_bytes()
    h = header_of(path)
    rnd = random.Random(4)
    garbage = [
        h.file_size + 100,
        1 << 39,
        (1 << 40) - 1,
        h.slots_offset,
        0x10,
        h.records_offset + 1,
        h.records_offset + h.records_size - 1,
        h.meta_offset,
    ]
    for i in used_slots(raw0, h)[:40]:
        off = slot_ref(raw0, h, i)[2] >> fmt.LEN_BITS
        key = raw0[off : off + 36].decode()
        bad = rnd.choice(garbage)
        length = rnd.choice([1, 37, 100, fmt.LEN_MASK])

        def edit(raw, i=i, bad=bad, length=length):
            at = h.slots_offset + 16 * i + 8
            raw[at : at + 8] = ((bad << fmt.LEN_BITS) | length).to_bytes(8, "little")

        p = damaged(tmp_path, path, edit)
        with kv.open_table(p) as t:
            for form in (key, key.upper()):
                with pytest.raises(kv.TableCorrupt):
                    t.get(form)
        assert reads_nothing_wrong(p, records) == "opened"
        p.unlink()


def test_a_slot_pointing_at_another_keys_record_never_serves_it(table, tmp_path):
    """Garbage that passes the record checksum: slot A's ref and check copied
    from slot B. Looking up A must not return B's value."""
    path, records = table
    raw0 = path.read_bytes()
    h = header_of(path)
    used = used_slots(raw0, h)
    rnd = random.Random(5)
    for _ in range(30):
        a, b = rnd.sample(used, 2)
        off_a = slot_ref(raw0, h, a)[2] >> fmt.LEN_BITS
        key_a = raw0[off_a : off_a + 36].decode()

        def edit(raw, a=a, b=b):
            src = h.slots_offset + 16 * b + 4
            dst = h.slots_offset + 16 * a + 4
            raw[dst : dst + 12] = raw[src : src + 12]

        p = damaged(tmp_path, path, edit)
        with kv.open_table(p) as t:
            assert t.get(key_a) is None and t.get(key_a.upper()) is None
        assert reads_nothing_wrong(p, records) == "opened"
        p.unlink()


def test_a_slot_sending_a_keys_prefix_to_its_record_does_not_make_the_prefix_a_key(table, tmp_path):
    """The lookup's fast path hashes the caller's bytes unparsed: a slot whose
    hash is a key prefix's hash, pointing at that key's record, must not let
    the prefix read the key's value."""
    path, records = table
    raw0 = path.read_bytes()
    h = header_of(path)
    i = used_slots(raw0, h)[0]
    _, check, ref = slot_ref(raw0, h, i)
    off = ref >> fmt.LEN_BITS
    key = raw0[off : off + 36]
    for prefix in (b"", key[:1], key[:8], key[:35], key + b" ", key + b" value"):
        h32 = _xxh3(prefix) >> 32
        home = fmt.home_slot(h32, h.home_slots)

        def edit(raw, home=home, h32=h32):
            raw[h.slots_offset + 16 * home : h.slots_offset + 16 * home + 16] = fmt.SLOT.pack(h32, check, ref)

        with kv.open_table(damaged(tmp_path, path, edit)) as t:
            with pytest.raises(kv.InvalidKey):
                t.get(prefix)
            with pytest.raises(kv.InvalidKey):
                t.get(prefix.decode())


# -- kv verify ------------------------------------------------------------------


def verify(path):
    with kv.open_table(path) as t:
        t.verify()


def test_verify_detects_every_flipped_byte_in_slots_records_and_metadata(tiny, tmp_path):
    path, _ = tiny
    verify(path)
    h = header_of(path)
    original = path.read_bytes()
    out = tmp_path / "flip.kvt"
    rnd = random.Random(6)
    positions = list(range(h.records_offset, records_end(original, h)))  # every record byte
    positions += list(range(h.slots_offset, h.slots_offset + 16 * h.slot_count))  # every slot byte
    positions += list(range(h.meta_offset, h.meta_offset + h.meta_size))  # all the metadata
    padding = [
        *range(fmt.HEADER.size, fmt.HEADER_SIZE),
        *range(records_end(original, h), h.slots_offset),
        *range(h.slots_offset + 16 * h.slot_count, h.meta_offset),
    ]
    positions += rnd.sample(padding, 200)  # and some padding between regions
    for at in positions:
        raw = bytearray(original)
        raw[at] ^= rnd.randrange(1, 256)
        out.write_bytes(raw)
        with pytest.raises(kv.TableCorrupt):
            verify(out)


STRUCTURAL = {
    "unsorted slot hashes": lambda raw, h, used: raw.__setitem__(
        slice(h.slots_offset + 16 * used[0], h.slots_offset + 16 * used[0] + 4), b"\xff\xff\xff\xff"
    ),
    "a slot emptied": lambda raw, h, used: raw.__setitem__(
        slice(h.slots_offset + 16 * used[3] + 8, h.slots_offset + 16 * used[3] + 16), bytes(8)
    ),
    "a record's key changed": lambda raw, h, used: raw.__setitem__(slice(h.records_offset, h.records_offset + 8), b"00000000"),
}


@pytest.mark.parametrize("damage", STRUCTURAL, ids=list(STRUCTURAL))
def test_verify_finds_structural_damage_behind_a_recomputed_checksum(table, tmp_path, damage):
    path, records = table
    h = header_of(path)

    def edit(raw):
        STRUCTURAL[damage](raw, h, used_slots(raw, h))
        reseal(raw, content=True)

    p = damaged(tmp_path, path, edit)
    with pytest.raises(kv.TableCorrupt):
        verify(p)  # and the table closes cleanly afterwards
    reads_nothing_wrong(p, records)


# -- atomic writes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_data(tmp_path_factory):
    from kv.gen import generate_file

    p = tmp_path_factory.mktemp("big") / "big.data"
    generate_file(1_500_000, p, seed=5)
    return p


def kill_midway(data, out, sig):
    """Start `kv build`, wait until it is writing its temporary file, signal it."""
    proc = subprocess.Popen(
        [KV, "build", str(data), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # SIGINT as a terminal delivers it: a shell running the tests in the
        # background (`make test &`) leaves it ignored, and the build with it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while not list(out.parent.glob(f".{out.name}.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    # At once: the temporary file exists only while the table is written.
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the build finished before it was signalled; use more data"
    return proc.returncode, err.decode()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["KILL", "TERM", "INT"])
def test_a_killed_build_leaves_no_file_under_the_final_name(big_data, tmp_path, sig):
    out = tmp_path / "big.kvt"
    code, err = kill_midway(big_data, out, sig)
    assert not out.exists()
    assert "Traceback" not in err
    if sig != signal.SIGKILL:
        assert code in (128 + sig, 130)
        assert not list(tmp_path.glob(".big.kvt.tmp-*")), "a catchable signal removes the temporary file"


def test_the_next_build_removes_what_a_sigkilled_build_left(big_data, tmp_path):
    out = tmp_path / "big.kvt"
    kill_midway(big_data, out, signal.SIGKILL)
    orphans = list(tmp_path.glob(".big.kvt.tmp-*"))
    assert orphans, "SIGKILL cannot be caught: the killed build's temporary file is still there"
    live = tmp_path / f".big.kvt.tmp-{os.getppid()}"  # a running process's build: not an orphan
    live.write_bytes(b"in progress")
    small = write_records(tmp_path / "small.data", [(str(uuid.uuid4()), b"v")])
    build_table(small, out)
    assert out.exists() and not any(p.exists() for p in orphans)
    assert live.exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_a_killed_rebuild_leaves_the_previous_table_untouched(big_data, table, tmp_path, sig):
    path, records = table
    out = tmp_path / "big.kvt"
    out.write_bytes(path.read_bytes())
    before = out.read_bytes()
    kill_midway(big_data, out, sig)
    assert out.read_bytes() == before
    with kv.open_table(out) as t:
        k, v = next(iter(records.items()))
        assert t.get(k) == v
