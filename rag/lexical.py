"""Keyword analysis: jieba words, CJK character bigrams, the bilingual glossary, and Okapi BM25.

The index that serves queries is on disk (rag.keyword_index, tantivy); the in-memory BM25 here is
the reference it is tested against, and what small throwaway experiments (eval/) use.

Two analyzers because they fail differently: jieba words are precise but a segmentation mismatch
("原因" vs "因为") loses the match; character bigrams always overlap but are noisier. Fused, they
beat either alone on our paraphrase set (eval/results/retrieval.md).

English terms inside Chinese text survive tokenization as lower-cased words, so "Dropout" in a
question matches "dropout" in a passage. A small bilingual glossary expands queries across the
two languages (users type "BN", notes say "Batch Normalization" or "批归一化").
"""

from __future__ import annotations

import math
import re
from pathlib import Path
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

K1 = 1.2
B = 0.75

_STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 吗 呢 吧 啊 么 这 那 其 之 也 都 就 而 并 把 被 对 于 为 以 中 上 下 个 一 有 我 你 他 它 们 "
    "我们 你们 什么 怎么 怎样 如何 哪些 一下 一些 可以 这个 那个 这些 那些 进行 时候 应该 需要 通常 "
    "a an the of to in on for is are be what how why which does do with and or".split()
)


def _load_glossary() -> tuple[tuple[str, ...], ...]:
    text = (Path(__file__).with_name("glossary.txt")).read_text(encoding="utf-8")
    return tuple(tuple(t.strip() for t in line.split("|")) for line in text.splitlines()
                 if line.strip() and not line.startswith("#"))


GLOSSARY = _load_glossary()  # equivalent terms (glossary.txt)


def _is_term(tok: str) -> bool:
    if not tok or tok in _STOPWORDS:
        return False
    return any(unicodedata.category(c)[0] in "LN" for c in tok)


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().replace("×", "x")


def tokenize(text: str) -> list[str]:
    """jieba search-mode words (sub-words included), lower-cased, stopwords and punctuation dropped."""
    import jieba

    jieba.setLogLevel(60)
    return [t for t in (w.strip() for w in jieba.cut_for_search(_normalize(text))) if _is_term(t)]


_SEGMENTS = re.compile(r"[\u4e00-\u9fff]+|[a-z0-9]+(?:[.\-][a-z0-9]+)*")


def bigrams(text: str) -> list[str]:
    """CJK character bigrams; Latin words and numbers stay whole."""
    out: list[str] = []
    for seg in _SEGMENTS.findall(_normalize(text)):
        if seg.isascii():
            if seg not in _STOPWORDS:
                out.append(seg)
        elif len(seg) == 1:
            out.append(seg)
        else:
            out.extend(seg[i:i + 2] for i in range(len(seg) - 1))
    return out


ANALYZERS = {"jieba": tokenize, "bigram": bigrams}


def _glossary_index() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for group in GLOSSARY:
        for term in group:
            index.setdefault(term, []).extend(t for t in group if t != term)
    return index


_GLOSSARY = _glossary_index()


def glossary_matches(text: str) -> list[tuple[str, list[str]]]:
    """(term found in the query, its equivalents) for every glossary term the query mentions."""
    low = _normalize(text)
    found: list[tuple[str, list[str]]] = []
    for term, others in _GLOSSARY.items():
        if term.isascii():
            # whole words only ("bn" is not inside "abnormal"); plural forms count
            if re.search(rf"(?<![a-z]){re.escape(term)}(?:s|es)?(?![a-z])", low):
                found.append((term, others))
        elif term in low:
            found.append((term, others))
    return found


def idf(n: int, df: int) -> float:
    """BM25 inverse document frequency; a term the corpus never uses gets the largest value (a word
    the corpus lacks is strong evidence that it does not cover the question)."""
    if n <= 0:
        return 1.0
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


EXPANSION_WEIGHT = 0.5  # glossary equivalents widen recall without outvoting the user's words


@dataclass
class QueryTerms:
    base: set[str]  # the query's own terms
    weights: dict[str, float]  # base terms 1.0, glossary equivalents EXPANSION_WEIGHT
    # A query term also counts as matched when a glossary equivalent of it is in the document
    # ("gradients" matches a passage that says 梯度): coverage is about concepts, not spellings.
    alternatives: dict[str, list[set[str]]]


def analyze_query(query: str, analyze=tokenize, expand: bool = True) -> QueryTerms:
    """One query analysis for every keyword consumer (both BM25 backends, evidence scoring)."""
    base = set(analyze(query))
    glossary = glossary_matches(query) if expand else []
    extra = {t for _, others in glossary for o in others for t in analyze(o)} - base
    alternatives: dict[str, list[set[str]]] = {}
    for term, others in glossary:
        for t in set(analyze(term)) & base:
            alternatives.setdefault(t, []).extend(set(analyze(o)) for o in others)
    weights = {t: 1.0 if t in base else EXPANSION_WEIGHT for t in sorted(base | extra)}
    return QueryTerms(base, weights, alternatives)


@dataclass
class LexicalHit:
    row: int
    score: float
    coverage: float  # share of the query's IDF mass that this document matches


class BM25:
    """Okapi BM25 for one analyzer. Stores per-document term counts; postings and IDF derive on load."""

    def __init__(self, doc_terms: list[dict[str, int]], analyzer: str = "jieba"):
        self.analyzer = analyzer
        self.analyze = ANALYZERS[analyzer]
        self.doc_terms = doc_terms
        self.doc_len = [sum(d.values()) for d in doc_terms]
        self.avgdl = (sum(self.doc_len) / len(self.doc_len)) if self.doc_len else 0.0
        df: Counter[str] = Counter()
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for row, terms in enumerate(doc_terms):
            for term, tf in terms.items():
                df[term] += 1
                self.postings.setdefault(term, []).append((row, tf))
        n = len(doc_terms)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    @classmethod
    def from_texts(cls, texts: Sequence[str], analyzer: str = "jieba") -> "BM25":
        analyze = ANALYZERS[analyzer]
        return cls([dict(Counter(analyze(t))) for t in texts], analyzer)

    def __len__(self) -> int:
        return len(self.doc_terms)

    def search(self, query: str, k: int = 10, expand: bool = True) -> list[LexicalHit]:
        q = analyze_query(query, self.analyze, expand)
        base, weight, alternatives = q.base, q.weights, q.alternatives
        terms = set(weight)
        scores: dict[int, float] = {}
        for term in terms:
            idf = self.idf.get(term)
            if idf is None:
                continue
            for row, tf in self.postings[term]:
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * self.doc_len[row] / (self.avgdl or 1)))
                scores[row] = scores.get(row, 0.0) + weight[term] * idf * norm
        # Unknown query terms get the largest IDF: a word the corpus never uses is strong evidence
        # that the corpus does not cover the question.
        unseen_idf = math.log(1 + (len(self) + 0.5) / 0.5) if len(self) else 1.0
        term_idf = {t: self.idf.get(t, unseen_idf) for t in base}
        total = sum(term_idf.values()) or 1.0
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
        hits = []
        for row, score in top:
            doc = self.doc_terms[row]
            matched = sum(idf for t, idf in term_idf.items()
                          if t in doc or any(alt and alt <= doc.keys() for alt in alternatives.get(t, ())))
            hits.append(LexicalHit(row, score, matched / total))
        return hits


class LexicalIndex:
    """Both keyword legs in memory (experiments and tests; indexes on disk use rag.keyword_index)."""

    def __init__(self, legs: dict[str, BM25]):
        self.legs = legs

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "LexicalIndex":
        return cls({name: BM25.from_texts(texts, name) for name in ANALYZERS})

    def __len__(self) -> int:
        return len(next(iter(self.legs.values())))

    def search(self, query: str, k: int = 10) -> list[LexicalHit]:
        """The jieba leg alone (its coverage is the abstain signal); see Retriever for fusion."""
        return self.legs["jieba"].search(query, k)
