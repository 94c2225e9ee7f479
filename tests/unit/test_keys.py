"""Key forms: what is a key, and what each malformed key is told."""

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kv.errors import InvalidKey
from kv.keys import canonical_key, shard_of

K = "3479d894-3271-4935-88cf-a06f3cbb80a5"


@pytest.mark.parametrize("form", [K, K.upper(), K.replace("-", ""), K.replace("-", "").upper(), K.encode(), K.title()])
def test_accepted_forms_canonicalise_to_lower_case_hyphenated(form):
    assert canonical_key(form) == K.encode()


@given(st.uuids())
def test_every_uuid_in_every_form_is_accepted(u):
    want = str(u).encode()
    assert canonical_key(str(u)) == want
    assert canonical_key(u.hex.upper()) == want


@pytest.mark.parametrize(
    "bad,why",
    [
        ("", "0 characters long"),
        ("3479d894", "8 characters long"),
        (K + "0", "37 characters long"),
        (K.replace("-", "_"), "expected '-'"),
        (K[:-1] + "g", "not a hex digit"),
        (K.replace("-", "")[:-1] + "z", "not a hex digit"),
        ("3479d894-3271-4935-88cf-a06f3cbb80\u00e9", "non-ASCII"),
        ("3479d89-43271-4935-88cf-a06f3cbb80a5", "expected '-'"),
    ],
)
def test_malformed_keys_raise_invalid_key_saying_why(bad, why):
    with pytest.raises(InvalidKey, match=why):
        canonical_key(bad)


def test_non_string_keys_are_invalid():
    for bad in (12345, None, 1.5, ["x"]):
        with pytest.raises(InvalidKey, match="str or bytes"):
            canonical_key(bad)


def test_bytes_like_keys_are_accepted():
    assert canonical_key(bytearray(K.upper().encode())) == K.encode()
    assert canonical_key(memoryview(K.replace("-", "").encode())) == K.encode()


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40), st.from_regex(r"\A[0-9a-fA-Fg-]{32,37}\Z")))
def test_any_input_is_canonicalised_or_refused_with_invalid_key(key):
    try:
        got = canonical_key(key)
    except InvalidKey as e:
        assert str(e)  # always says why
        return
    assert got == str(uuid.UUID(got.decode())).encode()  # lower-case 8-4-4-4-12
    raw = key.encode() if isinstance(key, str) else key
    assert got.replace(b"-", b"") == raw.replace(b"-", b"").lower()


def test_shard_of_uses_the_leading_bits_of_the_first_byte():
    assert shard_of(b"00" + K.encode()[2:], 4) == 0
    assert shard_of(b"7f" + K.encode()[2:], 2) == 0
    assert shard_of(b"80" + K.encode()[2:], 2) == 1
    assert shard_of(b"ff" + K.encode()[2:], 256) == 255
    assert shard_of(str(uuid.uuid4()).encode(), 1) == 0
