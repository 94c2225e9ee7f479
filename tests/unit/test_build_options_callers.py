"""Every caller of the builder passes one BuildOptions, and the table records
exactly `options.recorded()`: kv publish (function and flags) and kv serve's
reuse check."""

import uuid

import pytest
from conftest import write_records

import kv
from kv.build import build_table
from kv.cli import main
from kv.options import BuildOptions
from kv.publish import publish
from kv.serve import table_for_data

K1, K2 = str(uuid.UUID(int=21, version=4)), str(uuid.UUID(int=22, version=4))


@pytest.fixture
def data(tmp_path):
    return write_records(tmp_path / "d.data", [(K1, b"one\r"), (K2, b"two"), (K1, b"again\r")])


def test_publish_builds_with_the_options_it_is_given(data, tmp_path):
    options = BuildOptions(on_duplicate="last", keep_cr=True, load_factor=0.5)
    publish(data, tmp_path / "root", log=lambda m: None, options=options)
    with kv.open_table(tmp_path / "root" / "current") as t:
        assert t.meta["options"] == options.recorded()
        assert t.get(K1) == b"again\r"


def test_kv_publish_flags_are_the_build_flags(data, tmp_path, capsys):
    code = main(["publish", str(data), "--root", str(tmp_path / "root"), "--on-duplicate", "first", "--strip-cr", "--load-factor", "0.6"])
    assert code == 0, capsys.readouterr().err
    with kv.open_table(tmp_path / "root" / "current") as t:
        assert t.meta["options"] == BuildOptions(on_duplicate="first", strip_cr=True, load_factor=0.6).recorded()
        assert t.get(K1) == b"one"


def test_kv_publish_load_factor_out_of_range_is_a_usage_error(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["publish", str(data), "--root", str(tmp_path / "root"), "--load-factor", "0.99"])
    assert e.value.code == 2 and "--load-factor" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_serve_reuses_a_table_built_with_the_same_build_options(data, capsys):
    options = BuildOptions(on_duplicate="last", strip_cr=True)
    build_table(data, data.with_suffix(".kvt"), options)
    capsys.readouterr()
    table_for_data(data, options)
    assert "reusing" in capsys.readouterr().err
    table_for_data(data, BuildOptions(on_duplicate="first", strip_cr=True))
    assert "rebuilding" in capsys.readouterr().err


@pytest.mark.parametrize("suffix, lines", [(".tsv", [b"alpha\t1", b"beta\t2"]), (".jsonl", [b'{"key": "alpha", "value": "1"}'])])
def test_serve_with_other_options_on_string_data_says_so_and_rebuilds(tmp_path, suffix, lines):
    """A string-key table records its input format, which the default options
    (before resolving for the file) do not: the message comparing them once
    raised KeyError('format')."""
    data = tmp_path / f"d{suffix}"
    data.write_bytes(b"\n".join(lines) + b"\n")
    table_for_data(data, BuildOptions())
    said: list[str] = []
    table = table_for_data(data, BuildOptions(skip_invalid=True), log=said.append)
    assert len(said) == 1 and said[0].startswith(f"rebuilding {table}: it was built with other options: --skip-invalid")
    assert "give them too: --skip-invalid" in said[0]
    with kv.open_table(table) as t:
        assert t.meta["options"]["skip_invalid"] is True
