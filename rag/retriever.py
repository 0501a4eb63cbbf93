"""Hybrid retrieval: dense (FAISS) + BM25 over jieba words + BM25 over character bigrams, fused by
weighted reciprocal rank fusion. Weights and k were chosen on eval/retrieval.jsonl (paraphrases):
the static dense leg is the weakest of the three, so it counts half (eval/results/retrieval.md).

RRF scores are rank-based and say nothing about whether *anything* relevant was found, so the
"is this question covered?" decision uses two absolute signals of the best hit: the share of the
query's IDF mass it matches (BM25 coverage) and its dense cosine. The thresholds are calibrated
by `rag eval retrieval` on questions known to be in / not in the corpus (see eval/results).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


from .chunking import Chunk
from .config import MAX_QUERY_CHARS
from .errors import QueryError
from .index import LoadedIndex

MODES = ("hybrid", "dense", "bm25")  # bm25 = both keyword legs fused
LEG_WEIGHTS = {"jieba": 1.0, "bigram": 1.0, "dense": 0.5, "doc2query": 1.0}
RRF_K = 10
# Calibrated with `rag eval retrieval` (eval/results/retrieval.md): coverage of the query's IDF
# mass by the best keyword hit, or the dense cosine of the best hit, above which we answer.
COVERAGE_THRESHOLD = 0.3
DENSE_THRESHOLD = 0.92

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class Hit:
    chunk: Chunk
    score: float  # fused RRF score (or the single leg's score)
    dense: float | None = None  # cosine of this chunk, when the dense leg ranked it
    bm25: float | None = None  # jieba-word BM25
    bigram: float | None = None  # character-bigram BM25
    coverage: float = 0.0
    doc2query: float | None = None  # BM25 over the LLM's keywords and questions for this chunk (rag.doc2query)

    def to_dict(self) -> dict:
        c = self.chunk
        return {"id": c.id, "source": c.source, "heading": c.heading, "start": c.start, "end": c.end,
                "line": c.line, "text": c.text, "score": round(self.score, 6),
                "dense": None if self.dense is None else round(self.dense, 4),
                "bm25": None if self.bm25 is None else round(self.bm25, 4),
                "bigram": None if self.bigram is None else round(self.bigram, 4), "coverage": round(self.coverage, 3),
                "doc2query": None if self.doc2query is None else round(self.doc2query, 4)}


@dataclass
class Retrieval:
    query: str
    hits: list[Hit]
    covered: bool
    best_coverage: float
    best_dense: float


def clean_query(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    if text is None:
        raise QueryError("empty question: type a question")
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", str(text))).strip()
    if not text:
        raise QueryError("empty question: type a question")
    if len(text) > max_chars:
        raise QueryError(f"question too long ({len(text):,} characters; the limit is {max_chars:,})")
    return text


class Retriever:
    def __init__(self, index: LoadedIndex, embedder, candidates: int = 30, rrf_k: int = RRF_K,
                 coverage_threshold: float = COVERAGE_THRESHOLD, dense_threshold: float = DENSE_THRESHOLD):
        self.index = index
        self.embedder = embedder
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.coverage_threshold = coverage_threshold
        self.dense_threshold = dense_threshold

    def _dense(self, query: str, n: int) -> list[tuple[int, float]]:
        q = self.embedder.embed_query(query)
        scores, rows = self.index.vectors.search(q[None, :], n)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> Retrieval:
        query = clean_query(query)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        n = max(self.candidates, k)
        dense = self._dense(query, n) if mode in ("hybrid", "dense") else []
        lexical = {name: leg.search(query, n) for name, leg in self.index.bm25.legs.items()} if mode != "dense" else {}
        if mode != "dense" and self.index.doc2query is not None:  # chunks not enriched yet are just absent
            lexical["doc2query"] = self.index.doc2query.search(query, n)
        by_row: dict[int, Hit] = {}

        def hit(row: int, leg: str, rank: int, score: float) -> Hit:
            h = by_row.setdefault(row, Hit(self.index.chunks[row], 0.0))
            h.score += (LEG_WEIGHTS[leg] / (self.rrf_k + rank + 1)) if mode != "dense" else score
            return h

        for rank, (row, score) in enumerate(dense):
            h = hit(row, "dense", rank, score)
            h.dense = score
        for name, hits in lexical.items():
            for rank, lh in enumerate(hits):
                h = hit(lh.row, name, rank, lh.score)
                if name == "jieba":
                    h.bm25, h.coverage = lh.score, lh.coverage
                else:
                    setattr(h, name, lh.score)
        ranked = sorted(by_row.values(), key=lambda h: -h.score)[:k]
        words = lexical.get("jieba") or self.index.bm25.search(query, n)
        best_cov = max((lh.coverage for lh in words), default=0.0)
        best_dense = dense[0][1] if dense else 0.0
        covered = best_cov >= self.coverage_threshold or best_dense >= self.dense_threshold
        return Retrieval(query, ranked, covered, best_cov, best_dense)
