"""kv set's argument forms and data files, and the client's write body, without a server."""

from __future__ import annotations

import json

import pytest

from kv.client import write_body
from kv.commands.set import items_from_args, items_from_file

K1, K2 = "3479d894-3271-4935-88cf-a06f3cbb80a5", "f8a24bb8-eff8-41dc-929b-10b4c3e49e05"


def test_key_value_and_pairs():
    assert items_from_args([K1, "a b=c"]) == {K1: b"a b=c"}
    assert items_from_args([f"{K1}=x=y", f"{K2}="]) == {K1: b"x=y", K2: b""}


@pytest.mark.parametrize("args", [[], [K1], [K1, "a", "b"], [f"{K1}=a", "plain", "x"]])
def test_other_forms_are_usage_errors(args):
    with pytest.raises(ValueError):
        items_from_args(args)


def test_a_key_given_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        items_from_args([f"{K1}=a", f"{K1}=b"])


def test_data_files_in_each_format(tmp_path):
    (tmp_path / "d.data").write_bytes(f"{K1} one\n{K2} two words\n".encode())
    assert items_from_file(str(tmp_path / "d.data"), None) == {K1: b"one", K2: b"two words"}
    (tmp_path / "d.tsv").write_bytes(b"user:1\tv 1\nkey with space\tv2\n")
    assert items_from_file(str(tmp_path / "d.tsv"), None) == {"user:1": b"v 1", "key with space": b"v2"}
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"key": "a", "value": "x"}) + "\n" + json.dumps({"key": "b", "value_base64": "/w=="}) + "\n"
    )
    assert items_from_file(str(tmp_path / "d.jsonl"), None) == {"a": b"x", "b": b"\xff"}


def test_a_bad_line_names_file_and_line(tmp_path):
    (tmp_path / "d.tsv").write_bytes(b"a\tb\nno tab here\n")
    with pytest.raises(ValueError, match=r"d\.tsv:2: no TAB"):
        items_from_file(str(tmp_path / "d.tsv"), None)


def test_write_body_puts_utf8_in_set_and_other_bytes_in_base64():
    assert write_body({"a": b"x", "b": "y", "c": b"\xff"}, ["d"]) == {
        "set": {"a": "x", "b": "y"},
        "set_base64": {"c": "/w=="},
        "delete": ["d"],
    }
