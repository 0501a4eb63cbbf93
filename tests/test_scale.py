"""`rag bench scale`: the synthetic corpus, the keyword-store add and the report (fast); one quick run end to end (slow)."""

from pathlib import Path

import pytest

from rag.fakes import FakeEmbedder
from rag.chunking import chunk_document
from rag.corpus import scan_sources
from rag.index import build_index, load_index
from rag.loaders import load_file
from rag.bench.scale_corpus import UNITS_PER_FILE, make_corpus, seed_sentences, synth_file
from rag.bench.scale_phases import keyword_add
from rag.bench.scale_report import render

ROOT = Path(__file__).resolve().parent.parent


def test_synthetic_files_are_deterministic_notes_of_100_units(tmp_path):
    questions, sents = seed_sentences(ROOT / "corpus")
    assert len(sents) > 300 and all(q.endswith(("？", "?")) for q in questions)
    assert synth_file(questions, sents, seed=3) == synth_file(questions, sents, seed=3) != synth_file(questions, sents, seed=4)
    corpus = make_corpus(tmp_path / "c", ROOT / "corpus", 300)
    files = scan_sources([corpus])
    assert len(files) == 3
    chunks = chunk_document(load_file(files[0].path, files[0].source))
    assert UNITS_PER_FILE <= len(chunks) <= 1.2 * UNITS_PER_FILE  # one unit is (almost always) one chunk
    assert all(c.heading for c in chunks)
    assert make_corpus(tmp_path / "c", ROOT / "corpus", 300) == corpus  # complete: kept as it is


def test_keyword_store_add_of_one_file_leaves_the_live_index_as_it_was(tmp_path):
    corpus = make_corpus(tmp_path / "c", ROOT / "corpus", 200)
    emb = FakeEmbedder()
    build_index(scan_sources([corpus]), tmp_path / "idx", emb.model_id, lambda: emb)
    before = load_index(tmp_path / "idx").bm25.num_documents()
    questions, sents = seed_sentences(ROOT / "corpus")
    res = keyword_add(tmp_path / "idx", synth_file(questions, sents, seed=10**9))
    assert res["chunks"] >= UNITS_PER_FILE and res["add_s"] > 0
    assert load_index(tmp_path / "idx").bm25.num_documents() == before


def test_report_checks_the_targets_at_the_largest_size():
    lat = lambda p50, p95: {"p50": p50, "p95": p95, "mean": p50}  # noqa: E731
    report = {"machine": {"cpus": 2, "date": "2026-12-01", "embedder": "e", "load_start": 1.0}, "sizes": {
        "10k": {"n_target": 10_000, "build": {"chunks": 10_300, "build_s": 9.0, "build_stages_s": {"read": 1}},
                "keyword": {"keyword_load_s": 0.05, "keyword_rss_mb_after_queries": 15.0,
                            "latency_ms": {"jieba": lat(3, 11), "bigram": lat(1, 5)}},
                "serve": {"load_s": 0.4, "rss_mb_index_after_queries": 47.0, "disk_mb": {},
                          "latency_ms": {"embed": lat(0.3, 0.5), "dense": lat(1, 2), "fused": lat(10, 20)}},
                "add": {"add": {"total_s": 3.0, "stages_s": {"keywords": 1.0}}, "delete": {"total_s": 1.0, "stages_s": {}}}},
        "1M": {"n_target": 1_000_000, "build": {"chunks": 1_030_000},
               "keyword": {"keyword_rss_mb_after_queries": 300.0, "latency_ms": {"jieba": lat(9, 40), "bigram": lat(5, 30)}},
               "serve": {"load_s": 2.5, "rss_mb_index_after_queries": 900.0, "disk_mb": {},
                         "latency_ms": {"embed": lat(0.3, 0.5), "dense": lat(5, 9), "fused": lat(40, 160)}},
               "add": {"keyword_store_only": {"chunks": 103, "add_s": 1.2, "delete_s": 0.1}}}}}
    md = render(report)
    assert "## Targets at 1M" in md
    assert "| fused p50 | 40 ms | ≤ 50 ms | ✅ |" in md and "| fused p95 | 160 ms | ≤ 150 ms | ❌ |" in md
    assert "| index load | 2.5 s | ≤ 2.0 s | ❌ |" in md and "| add one file (keyword store) | 1.2 s | ≤ 5.0 s | ✅ |" in md
    assert "| 1,030,000 |" in md and "| 10,300 |" in md


@pytest.mark.slow  # four fresh processes (~20 s on a busy 2-core machine); the fake embedder, no model needed
def test_quick_scale_run_goes_through_every_phase_process(tmp_path, monkeypatch):
    from rag.bench import scale
    from rag.config import Settings

    monkeypatch.delenv("RAG_EMBEDDER", raising=False)  # the phases use the embedder of `settings`, not the default
    settings = Settings(corpus_dir=ROOT / "corpus", index_dir=tmp_path / "unused", cache_dir=tmp_path / "cache",
                        embedder="fake", generator="fake")
    r = scale.run(settings, out=tmp_path / "out", quick=True, sizes=[200], work=tmp_path / "work")
    size = r.data["sizes"]["200"]
    assert size["build"]["chunks"] >= 200 and size["keyword"]["keyword_documents"] == size["build"]["chunks"]
    assert size["serve"]["latency_ms"]["fused"]["p50"] > 0 and size["add"]["add"]["embedded"] >= UNITS_PER_FILE
    assert size["add"]["delete"]["chunks"] == size["build"]["chunks"]
    assert r.data["machine"]["embedder"] == "fake" and "`fake`" in (tmp_path / "out" / "scale_quick.md").read_text()
    assert load_index(tmp_path / "work" / "index-200").manifest["embedder"]["id"] == "fake"  # built with it too
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"scale_quick.json", "scale_quick.md", "scale_quick.png"}
    again = scale.run(settings, out=tmp_path / "out", quick=True, sizes=[200], work=tmp_path / "work", reuse=True)
    assert again.data["sizes"]["200"]["build"] == size["build"]  # reused: not rebuilt
