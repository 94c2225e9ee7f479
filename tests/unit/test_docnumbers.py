"""Every measured number the prose docs cite equals the benchmark result it
names (loadtest/docnumbers.py): a doc cannot drift from docs/bench/*.json."""

import importlib.util

from conftest import ROOT

spec = importlib.util.spec_from_file_location("docnumbers", ROOT / "loadtest" / "docnumbers.py")
docnumbers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docnumbers)


def test_every_cited_number_matches_the_benchmark_json():
    sources = docnumbers.load_sources()
    found = [p for doc in docnumbers.DOCS for p in docnumbers.problems(doc, sources)]
    assert found == []


def test_the_docs_cite_numbers_through_markers():
    cited = sum(len(docnumbers.NUMBER.findall(doc.read_text())) for doc in docnumbers.DOCS)
    assert cited >= 20


def test_a_changed_number_is_caught(tmp_path):
    doc = tmp_path / "X.md"
    doc.write_text("kv serves <!--n http throughput.rps_median.kv ,-->1<!--/n--> req/s\n<!--n http no.such.path -->3<!--/n-->\n")
    found = docnumbers.problems(doc, docnumbers.load_sources())
    assert len(found) == 2
    assert "X.md:1: says '1'" in found[0]
    assert "not in the results" in found[1]


def test_rewrite_fills_in_the_json_value():
    sources = {"http": {"a": {"b": 1234.5}}, "engine": {}, "engine-100m": {}}
    text = "x <!--n http a.b ,.0f-->old<!--/n--> y <!--n http a.b kib:.1f-->?<!--/n-->"
    assert docnumbers.rewrite(text, sources) == "x <!--n http a.b ,.0f-->1,234<!--/n--> y <!--n http a.b kib:.1f-->1.2<!--/n-->"
