"""The workers' metric files read while the master retires one (a reload)."""

import glob as globmod

import pytest
from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

from kv import metrics


def _counter_file(directory, pid, lookups):
    d = MmapedDict(str(directory / f"counter_{pid}.db"))
    key = '["kv_lookups", "kv_lookups_total", {"outcome": "hit"}, "Lookups"]'
    d.write_value(key, float(lookups), 0.0)
    d.close()


def test_totals_survive_a_file_retired_between_glob_and_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    _counter_file(tmp_path, 101, 3)
    _counter_file(tmp_path, 102, 4)
    real = globmod.glob
    calls = []

    def glob_then_retire(pattern, *a, **kw):
        # The first glob sees worker 102's file; the master retires it
        # before the read (its counts go to counter_retired.db first).
        files = real(pattern, *a, **kw)
        if not calls:
            metrics.retire_file(str(tmp_path / "counter_102.db"), str(tmp_path / "counter_retired.db"))
        calls.append(pattern)
        return files

    monkeypatch.setattr(globmod, "glob", glob_then_retire)
    assert multiprocess.glob is globmod  # the collector globs through this module
    t = metrics.totals()
    assert t["hits"] == 7  # 101's 3 and the retired 4, each once
    assert len(calls) >= 2  # read again from a new glob


def test_a_file_that_keeps_vanishing_is_an_error_not_a_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    _counter_file(tmp_path, 101, 3)
    real = globmod.glob
    monkeypatch.setattr(globmod, "glob", lambda pattern, *a, **kw: real(pattern, *a, **kw) + [str(tmp_path / "counter_999.db")])
    with pytest.raises(FileNotFoundError, match="counter_999.db"):
        metrics.totals()
