"""`rag bench retrieval`: embedder load, embedding throughput, index build time for the corpus (into a
temp dir), and retrieval latency p50/p95 including query embedding."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ..cpu import OtherLoad
from .questions import retrieval_queries
from .report import fmt, logger, meets, percentile, rounded

TARGET_P50_MS = 50.0

_log = logger("bench")


def bench_retrieval(settings, quick: bool) -> dict:
    from ..assistant import Assistant

    queries = retrieval_queries(20 if quick else 100)
    res: dict = {"embedder": settings.embedder, "corpus": str(settings.corpus_dir), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp, OtherLoad() as load:
        a = Assistant.from_settings(settings).derive(index_dir=Path(tmp) / "index")
        _log(f"loading embedder {settings.embedder}")
        t = time.perf_counter()
        emb = a.embedder
        res["embedder_load_s"] = round(time.perf_counter() - t, 3)
        _log(f"building an index of {settings.corpus_dir} in a temp dir")
        t = time.perf_counter()
        build = a.build([settings.corpus_dir], rebuild=True)
        res["index_build_s"] = round(time.perf_counter() - t, 2)
        res["chunks"] = build.chunks
        texts = [c.embed_text() for c in a.index().chunks]
        emb.embed_documents(texts[:8])
        t = time.perf_counter()
        emb.embed_documents(texts)
        dt = time.perf_counter() - t
        res["embed_chunks_per_s"] = round(len(texts) / dt, 1)
        res["embed_chars_per_s"] = round(sum(map(len, texts)) / dt)
        _log(f"retrieval latency over {len(queries)} queries (hybrid, k={settings.top_k})")
        for q in queries[:3]:  # warm-up: index load, jieba dictionary, FAISS
            a.search(q)
        lat, emb_lat = [], []
        for q in queries:
            t = time.perf_counter()
            emb.embed_query(q)
            emb_lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            a.search(q)
            lat.append(time.perf_counter() - t)
    res.update({"queries": len(lat),
                "search_ms": {"p50": round(percentile(lat, 50) * 1e3, 2), "p95": round(percentile(lat, 95) * 1e3, 2),
                              "max": round(max(lat) * 1e3, 2), "mean": round(statistics.mean(lat) * 1e3, 2)},
                "query_embed_ms_p50": round(percentile(emb_lat, 50) * 1e3, 3),
                "other_load_cores": rounded(load.cores)})
    return res


def markdown(r: dict) -> list[str]:
    sm = r.get("search_ms", {})
    return [f"## Retrieval — embedder `{r['embedder']}`{' (quick)' if r.get('quick') else ''}", "",
            "| | |", "|---|---|",
            f"| embedder load | {fmt(r.get('embedder_load_s'), ' s', 2)} |",
            f"| index build for `{r['corpus']}` ({r.get('chunks')} chunks, temp dir) | {fmt(r.get('index_build_s'), ' s', 2)} |",
            f"| embedding throughput | {fmt(r.get('embed_chunks_per_s'), ' chunks/s')} |",
            f"| query embedding p50 | {fmt(r.get('query_embed_ms_p50'), ' ms', 3)} |",
            f"| retrieval latency incl. query embedding, p50 / p95 / max ({r.get('queries')} queries, hybrid) | "
            f"{fmt(sm.get('p50'), ' ms', 1)} / {fmt(sm.get('p95'), ' ms', 1)} / {fmt(sm.get('max'), ' ms', 1)} |",
            f"| target p50 ≤ {TARGET_P50_MS:g} ms | {fmt(meets(sm.get('p50'), TARGET_P50_MS, False))} |",
            f"| other load | {fmt(r.get('other_load_cores'), ' cores', 2)} |", ""]


def summary_lines(r: dict) -> list[str]:
    return [f"retrieval: p50 {r['search_ms']['p50']} ms, p95 {r['search_ms']['p95']} ms; "
            f"build {r['index_build_s']} s; embedding {r['embed_chunks_per_s']} chunks/s"]
