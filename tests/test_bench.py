"""`rag bench` without models: statistics, summaries, report formatting, dispatch."""

import argparse
import json
import sys
import types

import pytest

from rag import bench
from rag.errors import RagError


def run(text, gen_tps, ttft=1.0, prefill=100.0, n=32, prompt=900, cached=0, drafted=None, accepted=None):
    return {"prompt_tokens": prompt, "cached_tokens": cached, "ttft_s": ttft, "total_s": ttft + n / gen_tps,
            "prefill_tps": prefill, "gen_tokens": n, "gen_tps": gen_tps, "drafted": drafted, "accepted": accepted,
            "text": text}


def fake_generation(tmp_path):
    llama = {"cold_start_s": 3.0, "load_s": 1.2, "threads": 2, "peak_rss_mb": 1900, "other_load_cores": 0.05,
             "runs": [run("批归一化可以加快收敛 [1]。", 20.0, ttft=8.0, prefill=110.0),
                      run("测试时不用 Dropout [1]。", 22.0, ttft=6.0, cached=216)],
             "score": {"seconds": 1.5, "logprobs": [-1.0, -3.0, -9.0, -7.5], "tokens": [2, 3, 4, 4]}}
    hf = {"cold_start_s": 15.0, "load_s": 4.0, "threads": 2, "peak_rss_mb": 7300, "other_load_cores": 0.1,
          "runs": [run("批归一化可以加快", 1.5, ttft=20.0, prefill=45.0, n=8), run("测试时不用 Drop", 1.6, ttft=19.0, n=8)],
          "score": {"seconds": 30.0, "logprobs": [-1.1, -3.2, -9.0, -7.4], "tokens": [2, 3, 4, 4]}}
    plain = {"runs": [run("a b c", 20.0, n=100), run("d e f", 20.0, n=100)]}
    lookup = {"runs": [run("a b c", 30.0, n=100, drafted=50, accepted=40), run("d e X", 25.0, n=100, drafted=50, accepted=20)]}
    one = {"threads": 1, "runs": [dict(run("x", 14.0, prefill=60.0), threads=1), run("y", 15.0)]}
    model = tmp_path / "missing.gguf"
    res = {"model": "packaged:test", "model_file": str(model), "quick": False, "n_gen_llama": 128,
           "n_gen_transformers": 32, "questions": ["q1", "q2"], "mcq": {}, "runs": {
               "llama.cpp": llama, "transformers fp32": hf, "llama.cpp speculative=none": plain,
               "llama.cpp speculative=prompt-lookup": lookup, "llama.cpp 1 thread": one}}
    res["summary"] = bench.summarize_generation(res, {"bandwidth": {"copy_gbs_1t": 20.0, "copy_gbs_2t": 28.0}})
    return res


def test_percentile_interpolates():
    assert bench.percentile([3, 1, 2], 50) == 2
    assert bench.percentile([1, 2, 3, 4], 50) == 2.5
    assert bench.percentile([10.0], 95) == 10.0
    assert bench.percentile(list(range(101)), 95) == pytest.approx(95)


def test_summary_ratios_targets_and_speculation(tmp_path):
    s = fake_generation(tmp_path)["summary"]
    assert s["llama.cpp"]["gen_tps"] == 21.0  # median over the prompts
    assert s["ratio"]["gen_tps"] == pytest.approx(21.0 / 1.55, abs=0.01)
    assert s["ratio"]["ttft_next_s"] == pytest.approx(19.0 / 6.0, abs=0.01)  # >1: llama.cpp is faster
    assert s["ratio"]["peak_rss"] == pytest.approx(1900 / 7300, abs=0.01)
    assert s["score_agreement"] == {"max_abs_diff": 0.2, "same_best": True}
    assert s["greedy_agreement"][0] == {"common_chars": 8, "of": 8}
    assert s["targets"]["generation >= 10x transformers"] is True
    assert s["targets"]["TTFT (model warm, next question) <= 3 s"] is False
    pl = s["prompt_lookup"]
    assert pl["identical_texts"] == 1 and pl["texts"] == 2
    assert pl["acceptance"] == 0.6 and pl["speedup"] > 1
    assert pl["first_diff"] == [{"common_chars": 4, "of": 5}]
    assert s["threads"]["1"]["gen_tps"] == 14.5 and s["threads"]["auto"]["gen_tps"] == 21.0
    assert "error" in s["physical_limit"]  # the model file does not exist here


def test_least_disturbed_round_wins():
    tries = [{"label": "x", "other_load_cores": 0.9, "runs": [1]}, {"label": "x", "error": "boom"},
             {"label": "x", "other_load_cores": 0.1, "runs": [2]}]
    best = bench.pick_least_disturbed(tries)
    assert best["runs"] == [2] and best["rounds_other_load"] == [0.9, None, 0.1]
    assert "error" in bench.pick_least_disturbed([{"error": "boom"}])


def test_markdown_report_has_every_section(tmp_path):
    report = {"machine": {"cpu": "Test CPU", "cores": 2, "ram_gb": 8, "loadavg": [0.1, 0.1, 0.1], "date": "today",
                          "bandwidth": {"copy_gbs_1t": 20.0, "copy_gbs_2t": 28.0}},
              "generation": fake_generation(tmp_path),
              "retrieval": {"embedder": "fake", "corpus": "corpus", "quick": True, "embedder_load_s": 0.5, "chunks": 10,
                            "index_build_s": 1.0, "embed_chunks_per_s": 500.0, "query_embed_ms_p50": 0.2, "queries": 20,
                            "search_ms": {"p50": 9.0, "p95": 15.0, "max": 20.0, "mean": 10.0}, "other_load_cores": 0.0},
              "tuning": {"model": "m", "repeats": 3, "quick": False, "rows": [
                  {"label": "2 threads", "threads": 2, "options": {}, "error": None, "prefill_tps": 100.0,
                   "gen_tps": 25.0, "ttft_s": 8.0, "same_text_as_first": True, "other_load_cores": 0.0},
                  {"label": "broken", "threads": 2, "options": {}, "error": "worker exited with 1"}]}}
    md = bench.render_markdown(report)
    for needle in ["Test CPU", "| generation | 21.0 tok/s | 1.6 tok/s | 13.6× |", "cold start", "peak RSS",
                   "Prompt-lookup drafting", "identical text | | 1/2", "### Threads", "## llama.cpp options",
                   "error: worker exited with 1", "p50 / p95", "9.0 ms / 15.0 ms", "target p50 ≤ 50 ms | yes"]:
        assert needle in md, needle
    json.dumps(report)  # the whole report is JSON-serialisable
    assert "13.6×" in bench.summary_lines(report)


def test_other_load_and_bandwidth_measure_something():
    from rag.cpu import OtherLoad

    with OtherLoad() as load:
        sum(range(10000))
    assert load.cores is None or load.cores >= 0
    bw = bench.memory_bandwidth(mb=8, repeats=1)
    assert bw["copy_gbs_1t"] > 0 and bw["copy_gbs_2t"] > 0


def test_unknown_suite_is_a_typed_error(settings, tmp_path):
    with pytest.raises(RagError, match="unknown bench suite"):
        bench.main(argparse.Namespace(suite="nope", out=tmp_path, quick=True), settings)


def test_ann_suite_is_delegated(settings, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("rag.ann")
    fake.main = lambda args, s: calls.append(args.suite) or 0
    monkeypatch.setitem(sys.modules, "rag.ann", fake)
    import rag

    monkeypatch.setattr(rag, "ann", fake, raising=False)
    assert bench.main(argparse.Namespace(suite="ann", out=tmp_path, quick=True), settings) == 0
    assert calls == ["ann"]


def test_retrieval_suite_runs_on_fakes_and_keeps_other_sections(settings, tmp_path, monkeypatch):
    """End to end through main() with the fake embedder: writes bench_quick.md/json, keeps old sections."""
    from rag.fakes import FakeEmbedder

    import rag.embedders

    monkeypatch.setattr(rag.embedders, "load_embedder", lambda spec, cache_dir, progress=None: FakeEmbedder())
    monkeypatch.setattr(bench, "memory_bandwidth", lambda mb=0, repeats=0: {"copy_gbs_1t": 1.0, "copy_gbs_2t": 2.0})
    out = tmp_path / "results"
    out.mkdir()
    (out / "bench_quick.json").write_text(json.dumps({"tuning": {"model": "m", "repeats": 1, "rows": []}}))
    assert bench.main(argparse.Namespace(suite="retrieval", out=out, quick=True), settings) == 0
    data = json.loads((out / "bench_quick.json").read_text())
    assert "tuning" in data and data["retrieval"]["queries"] == 20
    assert data["retrieval"]["chunks"] > 0 and data["retrieval"]["search_ms"]["p50"] > 0
    assert "## Retrieval" in (out / "bench_quick.md").read_text()
