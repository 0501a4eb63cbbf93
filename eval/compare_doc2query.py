"""How to fuse doc2query text into retrieval: measured on paraphrased questions (eval/results/doc2query.md).

Ranks every paraphrase of a retrieval set once per leg, then fuses the legs as rag.retriever does
(weighted reciprocal rank fusion, k = 10, 30 candidates per leg) under several designs:
  base             the shipped legs: dense 0.5, jieba 1, bigram 1
  leg:<a>@w        + a keyword leg over the generated text only (analyzer a: jieba, bigram or both), weight w
  expand@alpha     no extra leg: the generated text joins each chunk's own keyword documents, its term
                   counts scaled by alpha (in-memory BM25 of rag.lexical, the same formula as the index)
  sum@alpha        no extra leg: each keyword leg ranks by its BM25 score plus alpha x the BM25 score of
                   the chunk's generated text under the same analyzer (what rag.retriever can do without
                   rewriting the keyword store)
Run against an index built and enriched by `rag index --enrich` (RAG_INDEX_DIR / --index-dir):
    python eval/compare_doc2query.py --index-dir DIR [--set eval/retrieval.jsonl] [--only NAME ...]
Choose on the tuning set (eval/retrieval.jsonl); run the held-out set only for the chosen design.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import Settings  # noqa: E402
from rag.doc2query import content_hash, document, passage_of, read_cache  # noqa: E402
from rag.evaluation.data import first_gold_rank, golds_of, load_jsonl  # noqa: E402
from rag.lexical import ANALYZERS, BM25  # noqa: E402

N = 30
RRF_K = 10
BASE = {"dense": 0.5, "jieba": 1.0, "bigram": 1.0}


def fuse(rankings: dict[str, list[int]], weights: dict[str, float], k: int = 5) -> list[int]:
    score: Counter = Counter()
    for leg, w in weights.items():
        for rank, row in enumerate(rankings.get(leg, [])):
            score[row] += w / (RRF_K + rank + 1)
    return [row for row, _ in score.most_common(k)]


def expanded(texts: list[str], generated: list[str], alpha: float, analyzer: str) -> BM25:
    analyze = ANALYZERS[analyzer]
    docs = []
    for t, g in zip(texts, generated):
        c = Counter({w: float(n) for w, n in Counter(analyze(t)).items()})
        for w, n in Counter(analyze(g)).items():
            c[w] += alpha * n
        docs.append(dict(c))
    return BM25(docs, analyzer)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index-dir", type=Path, help="an enriched index (default: RAG_INDEX_DIR / index)")
    p.add_argument("--set", type=Path, default=Path("eval/retrieval.jsonl"))
    p.add_argument("--only", nargs="*", help="design names to report (default: all)")
    p.add_argument("--json", type=Path, help="also write the table here")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="keep the generated text of only this share of the chunks (an enrichment stopped part way)")
    args = p.parse_args()
    from rag.assistant import Assistant

    s = Settings.from_env(**({"index_dir": args.index_dir} if args.index_dir else {}))
    a = Assistant.from_settings(s)
    index = a.index()
    chunks = list(index.chunks)
    cache = read_cache(Path(s.index_dir) / "doc2query.jsonl")
    replies = cache.replies if cache else {}
    generated = [document(replies[h]) if h in replies else "" for h in
                 (content_hash(passage_of(c)) for c in chunks)]
    print(f"{len(chunks)} chunks, {sum(1 for g in generated if g)} with generated text "
          f"(model {cache.model if cache else '-'})", file=sys.stderr)
    if args.fraction < 1.0:  # a fixed pseudo-random subset: the first chunks by content hash
        keep = sorted(range(len(chunks)), key=lambda i: content_hash(passage_of(chunks[i])))
        keep = set(keep[:round(args.fraction * len(chunks))])
        generated = [g if i in keep else "" for i, g in enumerate(generated)]
    texts = [c.embed_text() for c in chunks]
    rows_with = [i for i, g in enumerate(generated) if g]
    gen_legs = {a_: BM25.from_texts([generated[i] for i in rows_with], a_) for a_ in ANALYZERS}
    expansions = {alpha: {a_: expanded(texts, generated, alpha, a_) for a_ in ANALYZERS}
                  for alpha in (0.25, 0.5, 1.0)}

    items = [it for it in load_jsonl(args.set) if it["kind"] in ("paraphrase", "heading")]
    designs: dict[str, tuple] = {"base": ("legs", BASE)}
    for w in (0.25, 0.5, 0.75, 1.0, 1.5):
        designs[f"leg:jieba@{w}"] = ("legs", {**BASE, "g_jieba": w})
        designs[f"leg:bigram@{w}"] = ("legs", {**BASE, "g_bigram": w})
        designs[f"leg:both@{w}"] = ("legs", {**BASE, "g_jieba": w, "g_bigram": w})
    for alpha in expansions:
        designs[f"expand@{alpha}"] = ("expand", alpha)
    for alpha in (0.25, 0.5, 0.75, 1.0):
        designs[f"sum@{alpha}"] = ("sum", alpha)
    if args.only:
        designs = {k: v for k, v in designs.items() if k in args.only}

    results = {name: [] for name in designs}
    for it in items:
        q = it["question"]
        dense = [int(r) for r in index.vectors.search(a.embedder.embed_query(q)[None, :], N)[1][0] if r >= 0]
        legs = {"dense": dense}
        scored = {}
        for name, leg in index.bm25.legs.items():
            scored[name] = [(h.row, h.score) for h in leg.search(q, 2 * N)]
            legs[name] = [r for r, _ in scored[name][:N]]
        for a_, bm in gen_legs.items():
            scored[f"g_{a_}"] = [(rows_with[h.row], h.score) for h in bm.search(q, 2 * N)]
            legs[f"g_{a_}"] = [r for r, _ in scored[f"g_{a_}"][:N]]
        golds = golds_of(it)
        for name, (kind, spec) in designs.items():
            if kind == "legs":
                top = fuse(legs, spec)
            elif kind == "sum":
                summed = {}
                for a_ in ANALYZERS:
                    total: Counter = Counter()
                    for r, sc in scored[a_]:
                        total[r] += sc
                    for r, sc in scored[f"g_{a_}"]:
                        total[r] += spec * sc
                    summed[a_] = [r for r, _ in total.most_common(N)]
                top = fuse({"dense": dense, **summed}, BASE)
            else:
                ex = {a_: [h.row for h in expansions[spec][a_].search(q, N)] for a_ in ANALYZERS}
                top = fuse({"dense": dense, **ex}, BASE)
            group = it.get("lang") if it["kind"] == "paraphrase" else "heading"
            results[name].append((group, first_gold_rank([chunks[r] for r in top], golds)))

    table = {}
    for name, ranks in results.items():
        row = {}
        for group in ("paraphrase", "zh", "en", "mixed", "heading"):
            rs = [r for g, r in ranks if g == group or (group == "paraphrase" and g != "heading")]
            if rs:
                row[group] = {"n": len(rs), "hit@1": sum(1 for r in rs if r == 1) / len(rs),
                              "hit@5": sum(1 for r in rs if r and r <= 5) / len(rs),
                              "mrr@5": sum(1 / r for r in rs if r and r <= 5) / len(rs)}
        table[name] = row
        al = row["paraphrase"]
        print(f"{name:18s} paraphrase hit@1 {al['hit@1']:.3f}  hit@5 {al['hit@5']:.3f}  MRR@5 {al['mrr@5']:.3f}   "
              + "  ".join(f"{g} {row[g]['hit@5']:.3f}/{row[g]['mrr@5']:.3f}" for g in ("zh", "en", "mixed", "heading")
                          if g in row))
    if args.json:
        args.json.write_text(json.dumps({"set": str(args.set), "chunks": len(chunks),
                                         "enriched": len(rows_with), "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
