"""Which fusion of the retrieval legs ranks paraphrased questions best (eval/results/paraphrase.md).

Ranks every question of a retrieval set once per leg (the index's dense, jieba and bigram BM25 legs over
the chunk text; in memory, jieba and bigram BM25 over the chunk's heading alone and over single
sentences), then fuses them by weighted reciprocal rank fusion as rag.retriever does, under each design
below, and prints hit@1 / hit@5 / MRR@5 per group:
  main               rag.retriever: dense 0.5, jieba 1, bigram 1, k 10
  k=<k>, dense=<w>   main with another RRF constant or dense weight
  heading j<a> b<b>  + heading legs at weights a (jieba) and b (bigrams); "heading" below is j0.5 b0.15,
                     the best on the tuning set (not shipped: it did not carry over, paraphrase.md)
  + rerank           heading, then the top 20 re-ordered by fused score + 0.05 x the share of the
                     question's character bigrams the chunk contains
  + stop phrases     heading, colloquial filler phrases cut from the question first
  + term pairs       heading, English words of the question expanded (weight 0.25, body legs) to the
                     Chinese term the notes write next to them, mined from "中文(English)" / "English(中文)"
  + feedback         heading + a jieba leg re-queried with the rarest words shared by the top 3 chunks
  + dense heading    heading + a dense leg over the headings' embeddings (weight 0.25)
  + shared ranks     heading, chunks of one unit (same heading) share their heading-leg rank
  main + sentences   main + jieba and bigram legs over single sentences (a chunk ranks by its best), 0.5 each
  dense sentences    main with the dense leg over single sentences (a chunk ranks by its best) instead of chunks
Run against a built index (RAG_INDEX_DIR / --index-dir):
    python eval/compare_fusion.py --index-dir DIR [--set eval/retrieval.jsonl] [--json OUT]
    python eval/compare_fusion.py --index-dir DIR --set SET --describe   # only: how heading-like the set is
Choose on the tuning set (eval/retrieval.jsonl) only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import Settings  # noqa: E402
from rag.evaluation.data import first_gold_rank, golds_of, load_jsonl  # noqa: E402
from rag.evaluation.metrics import hit_at, mrr_at  # noqa: E402
from rag.lexical import BM25, analyze_query, bigrams, tokenize  # noqa: E402

N = 30  # candidates per leg, as the retriever
STOP_PHRASES = ("有什么简单的办法", "是怎么回事", "怎么回事", "到底", "究竟", "请问", "该怎么办", "怎么办", "大概",
                "具体", "简单说说", "说说", "讲讲", "聊聊", "有没有", "能不能", "会不会", "一般来说")
_CJK = "\u4e00-\u9fff"
_ZH_EN = re.compile(rf"([{_CJK}]{{2,12}})\s*[（(]\s*([A-Za-z][A-Za-z0-9 .\-]{{0,40}}?)\s*[)）]")
_EN_ZH = re.compile(rf"([A-Za-z][A-Za-z0-9.\-]*(?: [A-Za-z][A-Za-z0-9.\-]*){{0,4}})\s*[（(]\s*([{_CJK}]{{2,10}})\s*[)）]")


def mine_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """(english, chinese) from "中文(English)" (the longest suffix of the Chinese run, at most 8 characters,
    that occurs elsewhere too) and "English(中文)"."""
    full = "\n".join(texts)
    pairs = set()
    for t in texts:
        for zh, en in _ZH_EN.findall(t):
            best = next((zh[-n:] for n in range(min(8, len(zh)), 1, -1) if full.count(zh[-n:]) >= 2), None)
            if best:
                pairs.add((en.lower().strip(), best))
        for en, zh in _EN_ZH.findall(t):
            pairs.add((en.lower().strip(), zh))
    return sorted(p for p in pairs if len(re.sub(r"[^a-z]", "", p[0])) >= 2 and not re.search(r"\d{3,}|img-", p[0]))


class Legs:
    def __init__(self, index, embedder):
        import numpy as np

        self.index, self.embedder, self.np = index, embedder, np
        self.chunks = list(index.chunks)
        self.bigram_sets = [set(bigrams(c.embed_text())) for c in self.chunks]
        self.words = [set(tokenize(c.embed_text())) for c in self.chunks]
        self.heading_vectors = np.stack([embedder.embed_query(c.heading or c.text[:40]) for c in self.chunks])
        self.pairs = mine_pairs([c.text for c in self.chunks])
        headings = [c.heading for c in self.chunks]
        self.heading_legs = {f"heading_{a}": BM25.from_texts(headings, a) for a in ("jieba", "bigram")}
        self.sentence_of: list[int] = []  # sentence row -> chunk row
        sentences = []
        for row, c in enumerate(self.chunks):
            for s in (s for s in re.split(r"(?<=[。！？!?；;\n])", c.text) if s.strip()):
                sentences.append(s)
                self.sentence_of.append(row)
        self.sentence_legs = {f"sentence_{a}": BM25.from_texts(sentences, a) for a in ("jieba", "bigram")}
        self.sentence_vectors = np.asarray(embedder.embed_documents(sentences))
        n = len(self.chunks)
        df = Counter(t for w in self.words for t in w)
        self.idf = {t: np.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def ranked(self, question: str, stop: bool = False, pairs: float = 0.0) -> dict[str, list]:
        """Each leg's top N as (row, score)."""
        q = question
        if stop:
            for p in STOP_PHRASES:
                q = q.replace(p, " ")
        kw = self.index.bm25
        out = {}
        vec = self.embedder.embed_query(question)
        scores, rows = self.index.vectors.search(vec[None, :], N)
        out["dense"] = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
        sims = self.heading_vectors @ vec
        out["dense_heading"] = [(int(r), float(sims[r])) for r in self.np.argsort(-sims)[:N]]
        extra = self._pair_terms(q) if pairs else ""
        for name, leg in kw.legs.items():
            weights = analyze_query(q, leg.analyze).weights
            for t in leg.analyze(extra) if extra else ():
                weights.setdefault(t, pairs)
            out[name] = [(row, score) for row, score, _ in kw.bm25(name, weights, N)]
        for name, leg in self.heading_legs.items():
            out[name] = [(h.row, h.score) for h in leg.search(q, N)]
        for name, leg in self.sentence_legs.items():
            best: dict[int, float] = {}
            for h in leg.search(q, 10 * N):
                best.setdefault(self.sentence_of[h.row], h.score)
            out[name] = sorted(best.items(), key=lambda kv: -kv[1])[:N]
        sims = self.sentence_vectors @ vec
        best = {}
        for i in self.np.argsort(-sims)[:10 * N]:
            best.setdefault(self.sentence_of[int(i)], float(sims[i]))
        out["dense_sentence"] = sorted(best.items(), key=lambda kv: -kv[1])[:N]
        return out

    def _pair_terms(self, q: str) -> str:
        low = q.lower()
        return " ".join(zh for en, zh in self.pairs if re.search(rf"(?<![a-z]){re.escape(en)}(?:s|es)?(?![a-z])", low))

    def feedback(self, question: str, top: list[int]) -> list[tuple[int, float]]:
        """A jieba leg re-queried with the question plus the 10 rarest words two of the top chunks share."""
        own = set(tokenize(question))
        shared = Counter(t for r in top[:3] for t in self.words[r] if t not in own)
        extra = sorted((t for t, m in shared.items() if m >= 2), key=lambda t: -self.idf.get(t, 0))[:10]
        weights = analyze_query(question, self.index.bm25.legs["jieba"].analyze).weights
        for t in extra:
            weights.setdefault(t, 0.3)
        return [(row, score) for row, score, _ in self.index.bm25.bm25("jieba", weights, N)]


def fuse(legs: dict[str, list], weights: dict[str, float], k: int = 10, shared_ranks: bool = False,
         chunks=None) -> Counter:
    score: Counter = Counter()
    for name, hits in legs.items():
        w = weights.get(name, 0.0)
        if not w:
            continue
        rank, last = -1, None
        for i, (row, s) in enumerate(hits):
            if shared_ranks and name.startswith("heading_"):
                unit = (chunks[row].source, chunks[row].heading, round(s, 6))
                rank = rank if unit[1:] == last else rank + 1
                last = unit[1:]
            else:
                rank = i
            score[row] += w / (k + rank + 1)
    return score


MAIN = {"dense": 0.5, "jieba": 1.0, "bigram": 1.0}
HEADING = {**MAIN, "heading_jieba": 0.5, "heading_bigram": 0.15}


def designs() -> list[tuple[str, dict]]:
    out = [("main", {"weights": MAIN})]
    out += [(f"main, k={k}", {"weights": MAIN, "k": k}) for k in (5, 20)]
    out += [(f"main, dense={w}", {"weights": {**MAIN, "dense": w}}) for w in (0.25, 0.75)]
    for a, b in ((0.5, 0.0), (0.0, 0.5), (0.25, 0.25), (0.5, 0.5), (1.0, 1.0), (0.5, 0.15)):
        out.append((f"heading j{a} b{b}", {"weights": {**MAIN, "heading_jieba": a, "heading_bigram": b}}))
    out += [("heading, k=5", {"weights": HEADING, "k": 5}), ("heading + rerank", {"weights": HEADING, "rerank": 0.05}),
            ("heading + stop phrases", {"weights": HEADING, "stop": True}),
            ("heading + term pairs", {"weights": HEADING, "pairs": 0.25}),
            ("heading + feedback", {"weights": {**HEADING, "feedback": 0.5}}),
            ("heading + dense heading", {"weights": {**HEADING, "dense_heading": 0.25}}),
            ("heading + shared ranks", {"weights": HEADING, "shared_ranks": True}),
            ("main + sentences", {"weights": {**MAIN, "sentence_jieba": 0.5, "sentence_bigram": 0.5}}),
            ("dense sentences", {"weights": {**MAIN, "dense": 0.0, "dense_sentence": 0.5}})]
    return out


def rank_all(L: Legs, items: list[dict], design: dict) -> list[int | None]:
    ranks = []
    cache: dict = {}
    for it in items:
        key = (it["question"], design.get("stop", False), design.get("pairs", 0.0))
        if key not in cache:
            cache[key] = L.ranked(it["question"], stop=key[1], pairs=key[2])
        legs = dict(cache[key])
        w = design["weights"]
        if w.get("feedback"):
            first = fuse(legs, {x: v for x, v in w.items() if x != "feedback"}, design.get("k", 10))
            legs["feedback"] = L.feedback(it["question"], [r for r, _ in first.most_common(3)])
        score = fuse(legs, w, design.get("k", 10), design.get("shared_ranks", False), L.chunks)
        order = [r for r, _ in score.most_common()]
        if design.get("rerank"):
            qb = set(bigrams(it["question"]))
            top = order[:20]
            top.sort(key=lambda r: -(score[r] + design["rerank"] * len(qb & L.bigram_sets[r]) / max(1, len(qb))))
            order = top + order[20:]
        ranks.append(first_gold_rank([L.chunks[r] for r in order[:10]], golds_of(it)))
    return ranks


def heading_share(L: Legs, item: dict) -> float:
    """Share of the question's jieba IDF mass whose words are in its gold heading: near 1 when the question
    rephrases the notes' heading, near 0 when it asks about a detail of the answer."""
    words = set(tokenize(item["question"]))
    heading = set(tokenize(item.get("gold_heading") or ""))
    total = sum(L.idf.get(t, max(L.idf.values())) for t in words) or 1.0
    return sum(L.idf.get(t, 0.0) for t in words & heading) / total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", type=Path, help="a built index (default: RAG_INDEX_DIR or ./index)")
    ap.add_argument("--set", type=Path, default=Path("eval/retrieval.jsonl"))
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    ap.add_argument("--describe", action="store_true", help="only say how much the paraphrases reuse their gold heading")
    args = ap.parse_args()
    from rag.assistant import Assistant

    settings = Settings.from_env(**({"index_dir": args.index_dir} if args.index_dir else {}))
    a = Assistant.from_settings(settings)
    L = Legs(a.index(), a.embedder)
    items = [it for it in load_jsonl(args.set) if it["kind"] != "out_of_corpus"]
    groups = {"heading": [i for i, it in enumerate(items) if it["kind"] == "heading"],
              "paraphrase": [i for i, it in enumerate(items) if it["kind"] == "paraphrase"]}
    for lang in ("en", "mixed", "zh"):
        groups[f"paraphrase/{lang}"] = [i for i in groups["paraphrase"] if items[i].get("lang") == lang]
    groups = {g: ix for g, ix in groups.items() if ix}
    shares = sorted(heading_share(L, items[i]) for i in groups["paraphrase"])
    share = {"median": shares[len(shares) // 2], "zero": sum(s == 0 for s in shares) / len(shares),
             "at_least_half": sum(s >= 0.5 for s in shares) / len(shares)}
    print(f"{args.set.name}: {len(shares)} paraphrases; share of the question's IDF mass in its gold heading: median "
          f"{share['median']:.2f}, none {share['zero']:.0%}, at least half {share['at_least_half']:.0%}")
    if args.describe:
        return 0
    rows = []
    print(f"{len(L.pairs)} term pairs mined from the chunks; set {args.set.name}")
    print("| design | " + " | ".join(f"{g} hit@1 / hit@5 / MRR@5" for g in groups) + " |")
    print("|---|" + "---|" * len(groups))
    for name, design in designs():
        ranks = rank_all(L, items, design)
        row = {"design": name, **{g: {"n": len(ix), "hit@1": hit_at([ranks[i] for i in ix], 1),
                                      "hit@5": hit_at([ranks[i] for i in ix], 5), "mrr@5": mrr_at([ranks[i] for i in ix], 5)}
                                  for g, ix in groups.items()}}
        rows.append(row)
        print(f"| {name} | " + " | ".join(f"{row[g]['hit@1']:.3f} / {row[g]['hit@5']:.3f} / {row[g]['mrr@5']:.3f}"
                                          for g in groups) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"set": args.set.name, "heading_share": share, "term_pairs": L.pairs, "rows": rows},
                                        ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
