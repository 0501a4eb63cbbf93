"""Compare embedder candidates for the dense leg, alone and fused with the keyword legs.

    python eval/compare_embedders.py            # writes eval/results/embedders.md + .json

Candidates: the packaged MiniLM (English-only vocabulary), and static embedders built from the
token-embedding matrices of the packaged Qwen2.5 GGUF models (raw, mean-centred, PCA-reduced, with
and without frequency weighting). Retrieval sets: eval/retrieval.jsonl (headings + paraphrases, used
for tuning) and eval/retrieval_heldout.jsonl (paraphrases written blind, never used for tuning).
Fusion uses the product's weights (rag.retriever.LEG_WEIGHTS, RRF_K) so rows are comparable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.evaluation.data import first_gold_rank, golds_of, load_jsonl  # noqa: E402
from rag.evaluation.metrics import hit_at, mrr_at  # noqa: E402
from rag.chunking import chunk_document  # noqa: E402
from rag.embedders import _token_embeddings, load_gguf_tokenizer  # noqa: E402
from rag.corpus import scan_sources  # noqa: E402
from rag.lexical import LexicalIndex  # noqa: E402
from rag.loaders import load_file  # noqa: E402
from rag.retriever import LEG_WEIGHTS, RRF_K  # noqa: E402
from rag.weights import gguf_path, st_folder  # noqa: E402

CACHE = Path.home() / ".cache" / "rag"
K = 5


def load_sets():
    sets = {}
    for name, path, kinds in [("heading", "retrieval.jsonl", {"heading"}),
                              ("paraphrase", "retrieval.jsonl", {"paraphrase"}),
                              ("held-out", "retrieval_heldout.jsonl", {"paraphrase"})]:
        items = [i for i in load_jsonl(ROOT / "eval" / path) if i["kind"] in kinds]
        sets[name] = items
    return sets


def metrics(rank_fn, chunks, items) -> dict:
    ranks = [first_gold_rank([chunks[r] for r in rank_fn(it["question"])[:K]], golds_of(it)) for it in items]
    return {"hit@1": hit_at(ranks, 1), "hit@5": hit_at(ranks, 5), "mrr@5": mrr_at(ranks, 5)}


def static_variants(model: str):
    g = gguf_path(model, CACHE)
    tok = load_gguf_tokenizer(g).backend_tokenizer
    emb = _token_embeddings(g)
    centred = emb - emb.mean(axis=0, keepdims=True)
    rng = np.random.default_rng(0)
    sample = centred[rng.choice(len(centred), size=min(40000, len(centred)), replace=False)]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    logw = np.log(np.arange(len(emb)) + 2.0)[:, None]
    out = {"raw": emb, "centred": centred}
    for d in (256, 512):
        reduced = centred @ vt[:d].T
        out[f"pca{d}"] = reduced
        out[f"pca{d}+logw"] = reduced * logw

    def encoder(matrix):
        def encode(texts):
            vecs = np.zeros((len(texts), matrix.shape[1]), np.float32)
            for i, enc in enumerate(tok.encode_batch(list(texts), add_special_tokens=False)):
                if enc.ids:
                    vecs[i] = matrix[enc.ids].mean(axis=0)
            return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return encode

    return {name: encoder(m) for name, m in out.items()}


def main() -> int:
    t0 = time.time()
    chunks = [c for sf in scan_sources([ROOT / "corpus"]) for c in chunk_document(load_file(sf.path, sf.source))]
    texts = [c.embed_text() for c in chunks]
    lex = LexicalIndex.from_texts(texts)
    sets = load_sets()

    def keyword_ranks(q):
        return {name: [h.row for h in leg.search(q, 30)] for name, leg in lex.legs.items()}

    def fuse(q, dense_rows):
        scores: dict[int, float] = {}
        legs = keyword_ranks(q)
        if dense_rows is not None:
            legs["dense"] = dense_rows
        for leg, rows in legs.items():
            for rank, row in enumerate(rows):
                scores[row] = scores.get(row, 0.0) + LEG_WEIGHTS[leg] / (RRF_K + rank + 1)
        return sorted(scores, key=lambda r: -scores[r])

    candidates = {}
    from rag.embedders import SentenceTransformerEmbedder

    minilm = SentenceTransformerEmbedder(str(st_folder("all-minilm-l6-v2")))
    candidates["all-MiniLM-L6-v2 (packaged)"] = minilm.embed_documents
    for model in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"):
        for name, enc in static_variants(model).items():
            candidates[f"static {model.split('-')[2]} {name}"] = enc

    rows = [{"embedder": "(none: keyword legs only)", "dense": None,
             "hybrid": {s: metrics(lambda q: fuse(q, None), chunks, items) for s, items in sets.items()}}]
    for name, encode in candidates.items():
        t = time.time()
        doc_vecs = encode(texts)
        embed_s = time.time() - t

        def dense_rank(q, doc_vecs=doc_vecs, encode=encode):
            return list(np.argsort(-(doc_vecs @ encode([q])[0]))[:30])

        rows.append({
            "embedder": name, "dim": int(doc_vecs.shape[1]), "embed_seconds": round(embed_s, 2),
            "dense": {s: metrics(dense_rank, chunks, items) for s, items in sets.items()},
            "hybrid": {s: metrics(lambda q: fuse(q, dense_rank(q)), chunks, items) for s, items in sets.items()},
        })
        print(f"{name}: dense paraphrase hit@5 {rows[-1]['dense']['paraphrase']['hit@5']:.3f}, "
              f"hybrid held-out hit@5 {rows[-1]['hybrid']['held-out']['hit@5']:.3f}", flush=True)

    out = ROOT / "eval" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"chunks": len(chunks), "sets": {s: len(v) for s, v in sets.items()}, "k": K,
            "leg_weights": LEG_WEIGHTS, "rrf_k": RRF_K, "seconds": round(time.time() - t0, 1)}
    (out / "embedders.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, ensure_ascii=False))
    lines = ["# Embedder comparison (dense leg alone, and fused with the two keyword legs)", "",
             f"`python eval/compare_embedders.py` · {meta['chunks']} chunks · sets: " +
             ", ".join(f"{s} {n}" for s, n in meta["sets"].items()) +
             " · held-out = paraphrases written blind, never used for tuning.", "",
             "| embedder | dim | dense hit@5 (para) | dense MRR@5 (para) | hybrid hit@1 / hit@5 / MRR@5 (para) | "
             "hybrid hit@1 / hit@5 / MRR@5 (held-out) | hybrid hit@5 (heading) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["dense"]
        h = r["hybrid"]
        lines.append("| {} | {} | {} | {} | {:.3f} / {:.3f} / {:.3f} | {:.3f} / {:.3f} / {:.3f} | {:.3f} |".format(
            r["embedder"], r.get("dim", "-"),
            "-" if d is None else f"{d['paraphrase']['hit@5']:.3f}", "-" if d is None else f"{d['paraphrase']['mrr@5']:.3f}",
            h["paraphrase"]["hit@1"], h["paraphrase"]["hit@5"], h["paraphrase"]["mrr@5"],
            h["held-out"]["hit@1"], h["held-out"]["hit@5"], h["held-out"]["mrr@5"], h["heading"]["hit@5"]))
    best = max(rows[1:], key=lambda r: (r["hybrid"]["held-out"]["mrr@5"], r["dense"]["paraphrase"]["hit@5"]))
    lines += ["", f"Best fused on the held-out set: **{best['embedder']}** (the product default is "
              "`packaged:qwen2.5-0.5b-static` = static 0.5b pca512+logw)."]
    (out / "embedders.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'embedders.md'} in {meta['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
