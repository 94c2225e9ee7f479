"""What kv relies on inside its dependencies, checked by name.

kv subclasses uvicorn's HttpToolsProtocol and gunicorn's Arbiter, configures
uvicorn-worker through CONFIG_KWARGS, and adds whole histogram counts through
prometheus_client's private bucket values. pyproject.toml pins each of these
dependencies to the range tested here; when a new version renames or removes
one of these names, this file fails first, naming what changed, instead of a
worker failing at run time.
"""

import inspect

import pytest


def _has(obj, *names):
    missing = [n for n in names if not hasattr(obj, n)]
    assert not missing, f"{obj!r} lacks {missing}: kv/worker.py or kv/metrics.py relies on them; re-check the subclass"


def test_uvicorn_protocol_has_what_kv_worker_overrides_and_reads():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    _has(HttpToolsProtocol, "connection_made", "shutdown", "timeout_keep_alive_handler", "data_received", "on_url",
         "on_headers_complete", "on_message_complete")
    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attr in ("self.timeout_keep_alive_task", "self.timeout_keep_alive", "self.server_state", "self.cycle", "self.loop"):
        assert attr in init, f"HttpToolsProtocol.__init__ no longer sets {attr}"
    conn = inspect.getsource(HttpToolsProtocol.connection_made)
    assert "self.transport" in conn
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for attr in ("self.response_complete", "self.keep_alive"):
        assert attr in cycle, f"RequestResponseCycle.__init__ no longer sets {attr}"


def test_uvicorn_server_state_has_connections_and_default_headers():
    from uvicorn.server import ServerState

    state = ServerState()
    assert isinstance(state.connections, set)
    assert isinstance(state.default_headers, list)


def test_uvicorn_config_accepts_the_worker_settings():
    from uvicorn.config import Config

    from kv.worker import KVWorker

    Config(app=lambda *a: None, **KVWorker.CONFIG_KWARGS)  # an unknown keyword raises TypeError


def test_uvicorn_worker_reads_config_kwargs():
    from uvicorn_worker import UvicornWorker

    assert "CONFIG_KWARGS" in inspect.getsource(UvicornWorker), "uvicorn-worker no longer reads CONFIG_KWARGS"


def test_gunicorn_arbiter_and_application_hooks_exist():
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    _has(Arbiter, "handle_hup", "run")
    _has(BaseApplication, "load_config", "load", "run")


def test_prometheus_histogram_child_keeps_bucket_values_and_sum():
    from prometheus_client import CollectorRegistry, Histogram

    h = Histogram("kv_contract_seconds", "x", ["route"], buckets=(0.1, 1.0), registry=CollectorRegistry())
    child = h.labels("r")
    child._buckets[0].inc(3)  # what kv.metrics.Counts.flush does with a whole count
    child._sum.inc(0.15)
    samples = {(s.name, s.labels.get("le")): s.value for s in h.collect()[0].samples}
    assert samples[("kv_contract_seconds_bucket", "0.1")] == 3
    assert samples[("kv_contract_seconds_sum", None)] == pytest.approx(0.15)


def test_prometheus_mmaped_dict_reads_and_writes_values(tmp_path):
    from prometheus_client.mmap_dict import MmapedDict

    path = str(tmp_path / "counter_1.db")
    d = MmapedDict(path)
    d.write_value("k", 2.0, 0.0)
    assert d.read_value("k")[0] == 2.0
    d.close()
    assert [(k, v) for k, v, _, _ in MmapedDict.read_all_values_from_file(path)] == [("k", 2.0)]


def test_what_the_security_rules_of_kv_worker_read_in_uvicorn():
    """kv/worker.py rules 4-7 (issue 15): the head limit reads the cycle's
    more_body and the protocol's url; the 431 uses STATUS_LINE; the first
    notify comes from uvicorn's first tick (last_notified starts at 0)."""
    from uvicorn.protocols.http import httptools_impl
    from uvicorn.server import Server

    assert 414 in httptools_impl.STATUS_LINE and 431 in httptools_impl.STATUS_LINE
    assert "self.more_body" in inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    assert "self.url" in inspect.getsource(httptools_impl.HttpToolsProtocol.on_message_begin)
    assert "self.last_notified = 0.0" in inspect.getsource(Server.__init__)
    assert "callback_notify" in inspect.getsource(Server.on_tick)


def test_what_kv_arbiter_relies_on_for_reload_order():
    """kv/serve.py KVArbiter: spawn_worker returns the pid in the master,
    reload() spawns then calls manage_workers (which stops the oldest), and a
    worker's tmp file tells its last heartbeat."""
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.workertmp import WorkerTmp

    assert "return pid" in inspect.getsource(Arbiter.spawn_worker)
    reload = inspect.getsource(Arbiter.reload)
    assert reload.index("self.spawn_worker()") < reload.index("self.manage_workers()")
    _has(WorkerTmp, "notify", "last_update")
