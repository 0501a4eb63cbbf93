"""`rag eval retrieval`: hit@k / MRR@5 per retriever on heading and paraphrased questions, and the abstain
decision on out-of-corpus questions with a sweep of the retriever's two thresholds."""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

from .data import each, first_gold_rank, golds_of, is_gold
from .metrics import OFF, abstains, best_setting, cross_validate, hit_at, mrr_at, prf, quantiles, sweep_thresholds

MODES = ("dense", "bm25", "hybrid")
MAX_K = 10  # depth of the hit@k curve
COVERAGE_GRID = [round(x * 0.025, 3) for x in range(0, 41)] + [OFF]
DENSE_GRID = [round(0.3 + x * 0.01, 2) for x in range(0, 71)] + [OFF]


def _rank_item(it: dict, retriever, index, searched=lambda q: q) -> dict:
    """`searched`: what the assistant searches for a question (hybrid only: an English question with its
    translation, rag.translate); the single legs rank the question as asked."""
    t0 = time.perf_counter()
    golds = golds_of(it)
    row = {"id": it["id"], "kind": it["kind"], "lang": it.get("lang"), "question": it["question"], "ranks": {}}
    for mode in MODES:
        r = retriever.search(searched(it["question"]) if mode == "hybrid" else it["question"], MAX_K, mode=mode)
        chunks = [h.chunk for h in r.hits]
        row["ranks"][mode] = first_gold_rank(chunks, golds) if golds else None
        if mode == "hybrid":
            row.update(best_coverage=r.best_coverage, best_dense=r.best_dense, covered=r.covered,
                       top1=f"{chunks[0].source} · {chunks[0].heading[:40]}" if chunks else "")
    row["reachable"] = bool(golds) and any(is_gold(c, golds) for c in index.chunks)
    row["seconds"] = time.perf_counter() - t0
    return row


def run(a, items: Sequence[dict]) -> dict:
    from ..retriever import COVERAGE_THRESHOLD, DENSE_THRESHOLD, Retriever

    index = a.index()
    retriever = Retriever(index, a.embedder, candidates=max(a.settings.candidates, MAX_K), rrf_k=a.settings.rrf_k)
    t_start = time.perf_counter()
    rows = [_rank_item(it, retriever, index, a.search_text) for it in each(items, a.progress, "retrieval")]
    return summarize(rows, COVERAGE_THRESHOLD, DENSE_THRESHOLD, seconds=time.perf_counter() - t_start,
                     embedder=a.settings.embedder, chunks=len(index.chunks))


def _ranking_tables(in_corpus: list[dict]) -> tuple[dict, dict]:
    """hit@1/5 and MRR@5 per retriever and question group; hit@k curves for headings and paraphrases."""
    table: dict[str, dict] = {}
    curves: dict[str, list] = {}
    groups = {"heading": [r for r in in_corpus if r["kind"] == "heading"],
              "paraphrase": [r for r in in_corpus if r["kind"] == "paraphrase"], "all": in_corpus}
    for lang in sorted({r["lang"] for r in in_corpus if r["kind"] == "paraphrase"}):
        groups[f"paraphrase/{lang}"] = [r for r in in_corpus if r["kind"] == "paraphrase" and r["lang"] == lang]
    groups = {g: rs for g, rs in groups.items() if rs}  # (a held-out set may have no heading questions)
    for mode in MODES:
        for g, rs in groups.items():
            ranks = [r["ranks"][mode] for r in rs]
            table[f"{mode}/{g}"] = {"n": len(rs), "hit@1": hit_at(ranks, 1), "hit@5": hit_at(ranks, 5),
                                    "mrr@5": mrr_at(ranks, 5)}
            if g in ("heading", "paraphrase"):
                curves[f"{mode}/{g}"] = [hit_at(ranks, k) for k in range(1, MAX_K + 1)]
    return table, curves


def _abstain_tables(rows: list[dict], coverage_threshold: float, dense_threshold: float) -> dict:
    """Abstaining: positive class = out-of-corpus question."""
    data = [(r["best_coverage"], r["best_dense"], r["kind"] == "out_of_corpus") for r in rows]
    current = prf([abstains(c, d, coverage_threshold, dense_threshold) for c, d, _ in data], [d[2] for d in data])
    sweep = sweep_thresholds(data, COVERAGE_GRID, DENSE_GRID)
    cov_only = [s for s in sweep if s["dense"] == OFF and s["coverage"] != OFF]
    dense_only = [s for s in sweep if s["coverage"] == OFF and s["dense"] != OFF]
    return {
        "current": {"coverage": coverage_threshold, "dense": dense_threshold, **current},
        "best": best_setting(sweep), "best_coverage_only": best_setting(cov_only),
        "best_dense_only": best_setting(dense_only),
        "cross_validated_f1": cross_validate(data, COVERAGE_GRID, DENSE_GRID),
        "coverage_table": [s for s in cov_only if s["coverage"] in {0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                                                                    0.55, 0.6, 0.7, 0.8}],
        "dense_table": [s for s in dense_only if s["dense"] in {0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95}],
        "signal_quantiles": {
            kind: {sig: quantiles([r[sig] for r in rows if (r["kind"] == "out_of_corpus") == (kind == "out_of_corpus")])
                   for sig in ("best_coverage", "best_dense")}
            for kind in ("in_corpus", "out_of_corpus")},
    }


def summarize(rows: list[dict], coverage_threshold: float, dense_threshold: float, **meta) -> dict:
    in_corpus = [r for r in rows if r["kind"] != "out_of_corpus"]
    table, curves = _ranking_tables(in_corpus)
    return {
        "meta": {**meta, "n_items": len(rows), "kinds": dict(Counter(r["kind"] for r in rows)),
                 "unreachable": [r["id"] for r in in_corpus if not r["reachable"]]},
        "table": table,
        "curves": curves,
        "abstain": _abstain_tables(rows, coverage_threshold, dense_threshold),
        "items": rows,
    }
