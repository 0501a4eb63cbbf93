import json

import numpy as np

from rag.bench import ann, ann_data, ann_report


def test_generator_is_deterministic_normalised_and_clustered():
    g = ann_data.FaceLikeVectors(64, 50)
    a, b = g.batch(3, 500), ann_data.FaceLikeVectors(64, 50).batch(3, 500)
    assert a.dtype == np.float32 and a.shape == (500, 64) and (a == b).all()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(g.batch(4, 500), a)
    q = g.queries(20)
    assert not any((q[i] == a).all(axis=1).any() for i in range(len(q)))  # held out
    nn = (q @ g.database(2000).T).max(axis=1)
    assert nn.mean() > 0.7  # a new face has a close match: same identity


def test_streaming_top_k_equals_exact_search():
    g = ann_data.FaceLikeVectors(32, 20)
    base, q = g.database(3000), g.queries(15)
    gt = ann_data.StreamingTopK(q, 10)
    for start in range(0, 3000, 700):
        gt.update(base[start:start + 700], start)
    exact = np.argsort(-(q @ base.T), axis=1)[:, :10]
    assert ann_data.recall(gt.ids, exact, 10) == 1.0


def test_tiny_benchmark_writes_report(tmp_path):
    runs = ann.in_memory_suite("tiny", 3000, 32, 50, 20, ["hnsw", "ivf-sq8"], [64], single=5)
    names = [r.index for r in runs]
    assert names[0].startswith("flat") and "brute force (NumPy)" in names and "LSH 64 bits" in names
    assert runs[0].points[0]["recall@10"] == 1.0
    numpy_run = runs[names.index("brute force (NumPy)")]
    assert numpy_run.points[0]["recall@10"] == 1.0  # the baseline is exact too
    for r in runs:
        assert r.bytes_per_vector > 0 and r.peak_rss_mb > 0
        for p in r.points:
            assert 0 <= p["recall@1"] <= 1 and 0 <= p["recall@10"] <= 1 and p["qps_batched"] > 0
    hnsw = next(r for r in runs if r.index.startswith("hnsw"))
    assert len(hnsw.points) == 5 and hnsw.points[-1]["recall@10"] >= 0.9
    streamed = ann.streaming_suite("tiny-stream", 4000, 32, 50, 10, "IVF16,PQ8x6,Refine(SQ8)",
                                   [2000], 600, [{"nprobe": 16, "k_factor": 8}],
                                   batch=1000, single=5)  # batches of 1000: the streamed run passes a checkpoint
    assert [r.n for r in streamed] == [2000, 4000]
    assert streamed[-1].points[0]["recall@10"] >= 0.8
    meta = {"date": "test", "cpus": 2, "faiss": "x", "numpy": "y", "quick": True, "load_start": 0, "identities": 50,
            "wall_s": 1.0}
    meta["conclusions"] = ann_report.conclusions(runs + streamed)
    ann_report.write_report(runs + streamed, tmp_path, meta)
    report = json.loads((tmp_path / "ann_quick.json").read_text())
    assert len(report["runs"]) == len(runs) + 2
    assert "| hnsw" in (tmp_path / "ann_quick.md").read_text()
    assert (tmp_path / "ann_quick_recall_qps.png").stat().st_size > 10_000


def test_cli_has_the_options():
    from rag.cli import build_parser

    args = build_parser().parse_args(["index", "--vector-index", "hnsw", "--ef-search", "64", "--store", "milvus",
                                      "--milvus-uri", "http://milvus:19530"])
    assert (args.vector_index, args.ef_search, args.store, args.milvus_uri) == ("hnsw", 64, "milvus", "http://milvus:19530")
    args = build_parser().parse_args(["bench", "ann", "--quick"])
    assert args.suite == "ann" and args.quick


def test_disk_suite_reranks_from_the_fp16_file(tmp_path):
    from rag.bench import ann_disk

    run = ann_disk.disk_suite(tmp_path, n=3000, dim=32, identities=50, nq=20, factory="IVF16_HNSW32,PQ8x4",
                              sweep=((4, 50), (16, 100)), single=5, batch=1000)
    assert run.n == 3000 and run.dataset.startswith("face-3k x 32") and len(run.points) == 2
    assert (tmp_path / "vectors-3k-32.f16").stat().st_size == 3000 * 32 * 2  # every vector once, fp16
    best = run.points[-1]  # all 16 lists scanned, 100 candidates re-ranked exactly
    assert best["recall@10"] >= 0.95 and best["recall@10"] >= best["recall@10_without_rerank"]
    text = "\n".join(ann_report.conclusions([run]))
    assert "- 3,000 x 32, RSS <= 2 GB, recall@10 >= 0.9 after re-ranking, >= 100 QPS batched: **" in text
    assert "recall@10 1.000 (without re-ranking" in text or "recall@10 0.9" in text  # the best point is reported
