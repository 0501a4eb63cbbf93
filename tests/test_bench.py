"""`rag bench` without models: statistics, summaries, report formatting, dispatch."""

import json

import pytest

from rag import bench
from rag.bench import generation, report, speed, tuning
from rag.bench.report import Outcome
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
    res["summary"] = generation.summarize_generation(res, {"bandwidth": {"copy_gbs_1t": 20.0, "copy_gbs_2t": 28.0}})
    return res


def test_percentile_interpolates():
    assert report.percentile([3, 1, 2], 50) == 2
    assert report.percentile([1, 2, 3, 4], 50) == 2.5
    assert report.percentile([10.0], 95) == 10.0
    assert report.percentile(list(range(101)), 95) == pytest.approx(95)


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
    best = generation.pick_least_disturbed(tries)
    assert best["runs"] == [2] and best["rounds_other_load"] == [0.9, None, 0.1]
    assert "error" in generation.pick_least_disturbed([{"error": "boom"}])


def test_markdown_report_has_every_section(tmp_path):
    data = {"machine": {"cpu": "Test CPU", "cores": 2, "ram_gb": 8, "loadavg": [0.1, 0.1, 0.1], "date": "today",
                          "bandwidth": {"copy_gbs_1t": 20.0, "copy_gbs_2t": 28.0}},
              "generation": fake_generation(tmp_path),
              "retrieval": {"embedder": "fake", "corpus": "corpus", "quick": True, "embedder_load_s": 0.5, "chunks": 10,
                            "index_build_s": 1.0, "embed_chunks_per_s": 500.0, "query_embed_ms_p50": 0.2, "queries": 20,
                            "search_ms": {"p50": 9.0, "p95": 15.0, "max": 20.0, "mean": 10.0}, "other_load_cores": 0.0},
              "tuning": {"model": "m", "repeats": 3, "quick": False, "rows": [
                  {"label": "2 threads", "threads": 2, "options": {}, "error": None, "prefill_tps": 100.0,
                   "gen_tps": 25.0, "ttft_s": 8.0, "same_text_as_first": True, "other_load_cores": 0.0},
                  {"label": "broken", "threads": 2, "options": {}, "error": "worker exited with 1"}]}}
    md = speed.render_markdown(data)
    for needle in ["Test CPU", "| generation | 21.0 tok/s | 1.6 tok/s | 13.6× |", "cold start", "peak RSS",
                   "Prompt-lookup drafting", "identical text | | 1/2", "### Threads", "## llama.cpp options",
                   "error: worker exited with 1", "p50 / p95", "9.0 ms / 15.0 ms", "target p50 ≤ 50 ms | yes"]:
        assert needle in md, needle
    json.dumps(data)  # the whole report is JSON-serialisable
    assert "13.6×" in speed.summary_lines(data)


def test_other_load_and_bandwidth_measure_something():
    from rag.cpu import OtherLoad

    with OtherLoad() as load:
        sum(range(10000))
    assert load.cores is None or load.cores >= 0
    bw = report.memory_bandwidth(mb=8, repeats=1)
    assert bw["copy_gbs_1t"] > 0 and bw["copy_gbs_2t"] > 0


def test_unknown_suite_is_a_typed_error(settings, tmp_path):
    with pytest.raises(RagError, match="unknown bench suite"):
        bench.run("nope", settings, out=tmp_path, quick=True)


def test_ann_suite_is_delegated(settings, tmp_path, monkeypatch):
    from rag.bench import ann

    calls = []
    monkeypatch.setattr(ann, "run", lambda s, **kw: calls.append(kw) or Outcome({}, ["ok"]))
    assert bench.run("ann", settings, out=tmp_path, quick=True, sizes=[10_000]).lines == ["ok"]
    assert calls == [{"out": tmp_path, "quick": True, "sizes": [10_000], "work": None}]


def test_retrieval_suite_runs_on_fakes_and_keeps_other_sections(settings, tmp_path, monkeypatch):
    """End to end through rag.bench.run() with the fake embedder: writes bench_quick.md/json, keeps old sections."""
    assert settings.embedder == "fake"  # rag.fakes, chosen by spec
    monkeypatch.setattr(report, "memory_bandwidth", lambda mb=0, repeats=0: {"copy_gbs_1t": 1.0, "copy_gbs_2t": 2.0})
    out = tmp_path / "results"
    out.mkdir()
    (out / "bench_quick.json").write_text(json.dumps({"tuning": {"model": "m", "repeats": 1, "rows": []}}))
    assert bench.run("retrieval", settings, out=out, quick=True).data["retrieval"]["queries"] == 20
    data = json.loads((out / "bench_quick.json").read_text())
    assert "tuning" in data and data["retrieval"]["queries"] == 20
    assert data["retrieval"]["chunks"] > 0 and data["retrieval"]["search_ms"]["p50"] > 0
    assert "## Retrieval" in (out / "bench_quick.md").read_text()


def test_cli_maps_the_flags_to_the_suite(monkeypatch, capsys, tmp_path):
    from rag import cli

    calls = []
    monkeypatch.setattr(bench, "run", lambda suite, s, **kw: calls.append((suite, kw)) or Outcome({}, ["line 1", "line 2"]))
    argv = ["bench", "scale", "--quick", "--sizes", "2k,1.5m", "--work", str(tmp_path / "w"), "--reuse",
            "--out", str(tmp_path / "o"), "--embedder", "fake", "--generator", "fake"]
    assert cli.main(argv) == 0
    assert calls == [("scale", {"out": tmp_path / "o", "quick": True, "sizes": [2000, 1_500_000],
                                "work": tmp_path / "w", "reuse": True})]
    assert capsys.readouterr().out == "line 1\nline 2\n"


def test_bad_suite_or_size_is_a_one_line_error(capsys, tmp_path):
    from rag import cli

    assert cli.main(["bench", "nope", "--out", str(tmp_path)]) != 0
    assert "error: unknown bench suite 'nope'" in capsys.readouterr().err
    assert cli.main(["bench", "scale", "--sizes", "10k,lots", "--out", str(tmp_path)]) != 0
    assert "error: 'lots' is not a size" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_sizes_and_labels():
    assert [report.parse_size(s) for s in ("2000", "10k", "1M", "2.5m")] == [2000, 10_000, 1_000_000, 2_500_000]
    assert report.parse_sizes(None) is None and report.parse_sizes("") is None
    assert report.parse_sizes("10k, 100k") == [10_000, 100_000]
    with pytest.raises(RagError, match="must be positive"):
        report.parse_size("0")
    assert [report.size_label(n) for n in (500, 2000, 100_000, 1_000_000, 1_500_000, 10_000_000)] == \
        ["500", "2k", "100k", "1M", "1500k", "10M"]


def test_nearest_rank_is_an_observed_value():
    assert report.nearest_rank([3.0, None, 1.0, 2.0], 0.5) == 2.0
    assert report.nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) in (2.0, 3.0)
    assert report.nearest_rank([None], 0.95) is None


def test_earlier_results_missing_or_unreadable(tmp_path):
    assert report.earlier(tmp_path / "none.json") == {}
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    with pytest.raises(RagError, match="cannot read the earlier results"):
        report.earlier(bad)
    assert bad.read_text() == "{not json"  # left for a person to look at


def test_worker_process_measures_a_generator(tmp_path):
    """A job through `python -m rag.bench.worker`, as the generation and tuning suites run each backend."""
    job = {"label": "fake", "spec": "fake:reply=测试时不用 Dropout [1]。", "cache_dir": str(tmp_path), "backend": "auto", "threads": 1,
           "messages": [[{"role": "user", "content": "测试的时候要用 Dropout 吗？"}]] * 2, "n_gen": 8,
           "score": {"messages": [{"role": "user", "content": "选哪个？"}], "prefix": "答案：", "options": ["A", "B"]}}
    r = generation.run_worker(job, "fake")
    assert "error" not in r, r
    assert r["label"] == "fake" and r["backend"] == "fake" and len(r["runs"]) == 2
    assert r["runs"][1]["text"] == "测试时不用 Dropout [1]。"
    assert r["cold_start_s"] >= r["load_s"] >= 0 and r["peak_rss_mb"] > 0
    assert len(r["score"]["logprobs"]) == 2
    assert r["other_load_cores"] is None or r["other_load_cores"] >= 0
    failed = generation.run_worker({**job, "label": "missing", "spec": "packaged:no-such-model"}, "missing")
    assert failed["label"] == "missing" and "worker exited with" in failed["error"]


def test_answer_suite_runs_every_path_on_fakes(settings, tmp_path):
    from rag.bench import answer

    out = tmp_path / "results"
    r = answer.run(settings, out=out, n_questions=2)
    assert r.data["questions"] == 2 and set(r.data["styles"]) == {"passages", "evidence", "linked"}
    for style in r.data["styles"].values():
        assert len(style["rows"]) == 2 and style["evidence_shown_s_p50"] is not None
    assert json.loads((out / "bench_answer.json").read_text())["questions"] == 2
    assert "# Answer path" in (out / "bench_answer.md").read_text() and "bench_answer.md" in r.lines[0]


def test_generation_and_tuning_suites_run_on_fakes(settings, tmp_path, monkeypatch):
    """The orchestration (prompts from a real retrieval, one worker process per configuration, summary,
    report) with the fake generator: every backend job loads it, so only the plumbing is measured."""
    monkeypatch.setattr(report, "memory_bandwidth", lambda mb=0, repeats=0: {"copy_gbs_1t": 1.0, "copy_gbs_2t": 2.0})
    out = tmp_path / "results"
    g = bench.run("generation", settings, out=out, quick=True).data["generation"]
    assert set(g["runs"]) == {"llama.cpp", "transformers fp32"} and g["questions"] == generation.QUESTIONS[:2]
    assert all(len(r["runs"]) == 2 and "error" not in r for r in g["runs"].values())
    assert "error" in g["summary"]["physical_limit"]  # no GGUF file behind a fake model
    t = bench.run("tuning", settings, out=out, quick=True)
    assert [r["label"] for r in t.data["tuning"]["rows"]] == [tuning.TUNING[0][0], tuning.TUNING[-1][0]]
    assert t.data["generation"] == json.loads(json.dumps(g))  # kept from the first run
    md = (out / "bench_quick.md").read_text()
    assert "## Generation — `fake` (quick)" in md and "## llama.cpp options" in md
