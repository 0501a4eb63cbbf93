"""Would a keyword leg over sentence windows find the passages of detail questions (eval/results/not_shipped.md)?

Windows of WINDOW sentences (with their chunk's heading) are indexed with BM25 over jieba words and over
character bigrams; a chunk counts its best window. The two window rankings join the shipped hybrid
ranking (as rag.retriever fuses: reciprocal rank, k = RRF_K) at weight w; "windows alone" fuses only them.
Questions are searched as the assistant searches them (an English one with its translation).
    python eval/compare_window_leg.py --index-dir index [--set SET ...]
Choose on tuning sets only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.assistant import Assistant  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation.data import covered_of, first_gold_rank, golds_of, load_jsonl  # noqa: E402
from rag.evaluation.metrics import hit_at, mrr_at  # noqa: E402
from rag.evidence import sentences  # noqa: E402
from rag.lexical import BM25  # noqa: E402
from rag.retriever import RRF_K  # noqa: E402

SETS = ("eval/retrieval.jsonl", "eval/retrieval_heldout.jsonl", "eval/answers_tune.jsonl")
WINDOW = 2
WEIGHTS = (0.0, 0.25, 0.5, 1.0, "windows alone")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path, default=None)
    ap.add_argument("--set", action="append", dest="sets")
    args = ap.parse_args()
    a = Assistant.from_settings(Settings.from_env(index_dir=args.index_dir))
    chunks = a.index().chunks
    texts, owner = [], []
    for row, c in enumerate(chunks):
        ss = [s for s in sentences(c.text) if s.strip()] or [c.text]
        for i in range(max(1, len(ss) - WINDOW + 1)):
            texts.append(f"{c.heading or ''} {''.join(ss[i:i + WINDOW])}")
            owner.append(row)
    legs = {name: BM25.from_texts(texts, analyzer=name) for name in ("jieba", "bigram")}
    by_id = {c.id: c for c in chunks}
    for set_path in args.sets or SETS:
        ranks: dict = {}
        for it in load_jsonl(Path(set_path)):
            if not covered_of(it) or it.get("kind") == "heading":
                continue
            base = a.retrieve(it["question"], 30)
            windows = {}
            for name, leg in legs.items():
                best: list[int] = []
                for h in leg.search(base.query, 60):
                    if owner[h.row] not in best:
                        best.append(owner[h.row])
                windows[name] = best
            for w in WEIGHTS:
                score = {} if w == "windows alone" else {h.chunk.id: h.score for h in base.hits}
                for rows in windows.values():
                    for rank, row in enumerate(rows):
                        cid = chunks[row].id
                        score[cid] = score.get(cid, 0.0) + (1.0 if w == "windows alone" else w) / (RRF_K + rank + 1)
                ranked = [by_id[c] for c in sorted(score, key=lambda c: -score[c])]
                ranks.setdefault(w, []).append(first_gold_rank(ranked[:10], golds_of(it)))
        print(set_path)
        for w, rs in ranks.items():
            print(f"  w={w!s:14s} n {len(rs):3d}  hit@1 {hit_at(rs, 1):.3f}  hit@5 {hit_at(rs, 5):.3f}  MRR@5 {mrr_at(rs, 5):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
