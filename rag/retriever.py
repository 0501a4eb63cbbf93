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
from .lexical import LexicalHit

MODES = ("hybrid", "dense", "bm25")  # bm25 = both keyword legs fused
LEG_WEIGHTS = {"jieba": 1.0, "bigram": 1.0, "dense": 0.5}
# doc2query (rag.doc2query): each keyword leg ranks by its BM25 plus this share of the BM25 of the LLM's
# keywords/questions for the chunk (same analyzer). Chosen on eval/retrieval.jsonl over separate RRF legs,
# which gained more on paraphrases but cost heading questions and, while some chunks had no generated text
# yet, pulled the enriched ones up (below the plain legs even at 90% coverage): eval/results/doc2query.md.
DOC2QUERY_WEIGHT = 0.5
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
    doc2query: float | None = None  # jieba BM25 of the LLM's keywords/questions for this chunk (rag.doc2query)

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
    translation: str | None = None  # an English question's Chinese translation, searched with it (rag.translate)


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
        d2q = self.index.doc2query if mode != "dense" else None
        enriched = d2q is not None and len(d2q) > 0  # no generated text yet: the legs as they were
        wide = 2 * n if enriched else n  # a chunk may rise from below the top n
        lexical = {name: leg.search(query, wide) for name, leg in self.index.bm25.legs.items()} if mode != "dense" else {}
        own_words = lexical.get("jieba", [])[:n]
        generated = self._add_doc2query(query, lexical, n) if enriched else {}
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
                elif name == "bigram":
                    h.bigram = lh.score
        for row, score in generated.items():
            if row in by_row:
                by_row[row].doc2query = score
        ranked = sorted(by_row.values(), key=lambda h: -h.score)[:k]
        words = own_words or self.index.bm25.search(query, n)  # coverage: the note's own words only
        best_cov = max((lh.coverage for lh in words), default=0.0)
        best_dense = dense[0][1] if dense else 0.0
        covered = best_cov >= self.coverage_threshold or best_dense >= self.dense_threshold
        return Retrieval(query, ranked, covered, best_cov, best_dense)

    def _add_doc2query(self, query: str, lexical: dict[str, list[LexicalHit]], n: int) -> dict[int, float]:
        """Add DOC2QUERY_WEIGHT x the generated text's BM25 to each keyword leg's scores and keep the leg's
        new top n (in place); returns the generated text's jieba score per row."""
        generated = {}
        for name, own in lexical.items():
            extra = self.index.doc2query.search(query, 2 * n, analyzer=name)
            by_row = {h.row: LexicalHit(h.row, h.score, h.coverage) for h in own}
            for g in extra:
                by_row.setdefault(g.row, LexicalHit(g.row, 0.0, 0.0)).score += DOC2QUERY_WEIGHT * g.score
            if name == "jieba":
                generated = {g.row: g.score for g in extra}
            lexical[name] = sorted(by_row.values(), key=lambda h: -h.score)[:n]
        return generated
