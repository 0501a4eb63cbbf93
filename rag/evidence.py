"""Evidence first: pick the sentences inside the retrieved passages that answer the question.

The small reader copies well and reasons badly, so the system chooses what it reads: every sentence
of the top passages is scored against the question by the same three signals retrieval uses (jieba
words with the glossary, character bigrams, the dense embedder), plus the passage's rank. The best
sentences, with a neighbour where a sentence leans on the next one ("原因如下："), become the
evidence: shown to the user at once, cited, and the only text the model reads besides the headings.
Reading 150-300 characters instead of five 500-character passages is also most of the speed-up.

Sentence positions are character offsets into the source file (chunk.start + offset in the chunk),
so a citation points at the sentence, not only at its passage.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .citations import without_fake_sources
from .lexical import analyze_query, bigrams, glossary_matches, tokenize

# One sentence splitter for the whole package (evidence, citation checking, UI highlighting).
# A '.' ends a sentence only before white space or the end, so "2.5" and "e.g" stay whole.
_SENTENCE = re.compile(r"(?:[^。！？!?；;\n.]|\.(?!\s|$))*(?:[。！？!?；;]+|\.(?=\s|$)|\n|$)")
# Weights of the sentence score, compared on the tuning sets with `rag eval evidence`; within ±2
# points of each other (0.3/0.3/0.2/0.2 best by 1.7), so the evidence recall is limited by size, not weights.
W_WORDS, W_BIGRAMS, W_DENSE, W_RANK = 0.3, 0.3, 0.2, 0.2
# Sizes measured with `rag eval evidence` (gold sentence among the evidence, 232 tuning questions):
# 3 passages/4 sentences/360 chars 62%; + the next sentence of the best 4 within 450 chars 73%;
# 6 sentences/500 chars without neighbours 72% with more text; 5 passages/8 sentences/700 chars 79%
# but twice the reading. The notes often answer in one sentence and give the reason in the next.
MAX_PASSAGES = 3  # sentences are taken from the top passages only
MAX_SENTENCES = 4  # before neighbours
MAX_CHARS = 450  # the whole evidence; a long sentence is cut at this budget
MIN_CHARS = 4
NEIGHBOURS = 4
QUOTE_TOP_PASSAGE = 0.2  # score bonus of passage [1]'s sentences when choosing the one to quote
# A second sentence of the quoted passage joins the quote when it scores at least QUOTE_SECOND of the
# best (the note states a fact in one sentence and qualifies it in another). Measured on the 232
# tuning paraphrases (scratch runs of `rag eval evidence`'s gold test): the quote holds the gold
# sentence 36% -> 47%, 58 -> 90 characters; ratio 0.9 gave 42%, 0.5 48% with 94 characters.
QUOTE_SECOND = 0.7
QUOTE_MAX_CHARS = 200
LEANS_ON_NEXT = re.compile(r"(?:[:：]|如下|以下几点|包括|主要有|分为)\s*$")  # "原因如下：" + line break


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of `text`, white space trimmed; empty pieces dropped."""
    out = []
    for m in _SENTENCE.finditer(text):
        s, e = m.span()
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def sentence_pieces(text: str) -> list[str]:
    """Sentences with their punctuation and white space: they concatenate back to `text` exactly."""
    return [m.group(0) for m in _SENTENCE.finditer(text) if m.group(0)]


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


@dataclass
class Evidence:
    n: int  # the passage's number, 1-based: the citation number the answer uses
    text: str
    source: str
    line: int
    start: int  # character span of the sentence in the source file
    end: int
    score: float

    @property
    def shown(self) -> str:
        """The sentence as a reader sees it (CLI, UI, JSON): source markers the document wrote into itself
        are dropped, so the only source beside it is the one retrieval attached."""
        return without_fake_sources(self.text)

    def to_dict(self) -> dict:
        return {"n": self.n, "text": self.shown, "source": self.source, "line": self.line,
                "start": self.start, "end": self.end, "score": round(self.score, 4)}


def _is_heading_echo(sentence: str, heading: str) -> bool:
    """A sentence that repeats the passage's own question is not evidence for an answer."""
    if not heading:
        return False
    a, b = set(bigrams(sentence)), set(bigrams(heading))
    return bool(a) and len(a & b) / len(a) >= 0.8


# An exam question in the notes: a numbered line asking for a choice ("下列…", "…()", "…这种说法是"),
# then short bullets. Those bullets are options, most of them wrong on purpose ("- AdaGrad使用的是二阶
# 差分"), not facts. A plain numbered question ("14. 批规范化的好处都有啥?") counts as one when its
# bullets are followed by a line of prose, the explanation exam notes give after the options (the corpus
# has 7 such items; quoting their wrong options, "- 它将权重的归一化平均值和标准差", was a wrong answer's
# evidence). Bullets under a question heading that end the note or run into the next numbered question
# ("3. 有哪些常用的优化器？"), or long ones, are a note's answer and stay evidence.
_ASKS = re.compile(r"^\d+\s*[.、．].*(?:下列|以下|下面|[(（]\s*[)）]\s*[?？]?\s*$|[是吗]\s*[?？]?\s*$)")
_QUESTION = re.compile(r"^\d+\s*[.、．].*[?？]\s*$")
_NUMBERED = re.compile(r"^\d+\s*[.、．]")
OPTION_MAX_CHARS = 60


def option_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of `text` that are the option bullets of a multiple-choice question."""
    spans, block, asks, question, pos = [], [], False, False, 0

    def close(explained: bool):
        if block and (asks or (question and explained)) and all(e - s <= OPTION_MAX_CHARS for s, e in block):
            spans.extend(block)

    for line in text.splitlines(keepends=True):
        body = line.strip()
        if body.startswith("- ") or body == "-":
            block.append((pos, pos + len(line)))
        else:
            close(explained=bool(body) and not _NUMBERED.match(body))
            block, asks, question = [], bool(_ASKS.search(body)), bool(_QUESTION.search(body))
        pos += len(line)
    close(explained=False)
    return spans


def _query_terms(question: str) -> dict[str, float]:
    """jieba words of the question (weight 1) and their glossary equivalents (weight 0.5)."""
    return analyze_query(question).weights


def score_sentences(question: str, texts: list[str], contexts: list[str], embedder=None) -> np.ndarray:
    """Relevance in [0, 1]-ish of each sentence to the question (rank prior not included).

    Word overlap is IDF-weighted over the candidate sentences themselves, so a term every sentence
    shares counts little; the dense score embeds the sentence with its passage's heading (a bare
    "不需要。" means nothing without the question it answers)."""
    if not texts:
        return np.zeros(0)
    terms = _query_terms(question)
    toks = [set(tokenize(t)) for t in texts]
    n = len(texts)
    idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) + 0.1
           for t in terms for df in [sum(t in s for s in toks)]}
    base = sum(idf[t] * w for t, w in terms.items() if w == 1.0) or 1.0
    words = np.array([sum(idf[t] * w for t, w in terms.items() if t in s) / base for s in toks])
    qb = set(bigrams(question))
    for _, others in glossary_matches(question):
        qb.update(*(bigrams(o) for o in others))
    grams = np.array([len(qb & set(bigrams(t))) / (len(qb) or 1) for t in texts])
    dense = np.zeros(n)
    if embedder is not None:
        q = embedder.embed_query(question)
        d = embedder.embed_documents([f"{c}\n{t}" if c else t for c, t in zip(contexts, texts)])
        dense = np.asarray(d, dtype=np.float64) @ np.asarray(q, dtype=np.float64)
        spread = dense.max() - dense.min()
        dense = (dense - dense.min()) / spread if spread > 1e-9 else np.zeros(n)
    return W_WORDS * np.minimum(words, 1.5) + W_BIGRAMS * grams + W_DENSE * dense


def select_evidence(question: str, hits, embedder=None, max_passages: int = MAX_PASSAGES,
                    max_sentences: int = MAX_SENTENCES, max_chars: int = MAX_CHARS,
                    neighbours: int = NEIGHBOURS) -> list[Evidence]:
    """The evidence sentences for `question` from the top `max_passages` hits, in reading order."""
    cands: list[tuple[int, int, int, int]] = []  # (hit index, sentence index, start, end) in chunk.text
    by_hit: dict[int, list[tuple[int, int]]] = {}
    for i, h in enumerate(hits[:max_passages]):
        options = option_spans(h.chunk.text)
        spans = [(s, e) for s, e in split_sentences(h.chunk.text)
                 if e - s >= MIN_CHARS and not _is_heading_echo(h.chunk.text[s:e], h.chunk.heading)
                 and not any(a <= s < b for a, b in options)]
        by_hit[i] = spans
        cands.extend((i, j, s, e) for j, (s, e) in enumerate(spans))
    if not cands:
        return []
    texts = [hits[i].chunk.text[s:e] for i, _, s, e in cands]
    contexts = [hits[i].chunk.heading for i, _, _, _ in cands]
    rel = score_sentences(question, texts, contexts, embedder)
    prior = np.array([1.0 / (1 + i) for i, _, _, _ in cands])
    total = rel + W_RANK * prior
    chosen: dict[tuple[int, int], float] = {}
    used = 0
    for c in np.argsort(-total, kind="stable"):
        if len(chosen) >= max_sentences or used >= max_chars:
            break
        i, j, s, e = cands[c]
        picks = [j]
        # A sentence that announces a list or a reason ("原因如下：") is useless without the next one.
        if LEANS_ON_NEXT.search(hits[i].chunk.text[s:e]) and j + 1 < len(by_hit[i]):
            picks.append(j + 1)
        for p in picks:
            if (i, p) not in chosen:
                chosen[(i, p)] = float(total[c])
                used += by_hit[i][p][1] - by_hit[i][p][0]
    # Context: the sentence after each chosen one (notes often state the answer, then the reason),
    # best-scored first, while the budget lasts.
    for (i, j), score in sorted(chosen.items(), key=lambda kv: -kv[1])[:neighbours]:
        nxt = (i, j + 1)
        if j + 1 < len(by_hit[i]) and nxt not in chosen:
            size = by_hit[i][j + 1][1] - by_hit[i][j + 1][0]
            if used + size <= max_chars:
                chosen[nxt] = score * 0.5
                used += size
    out = []
    for (i, j), score in sorted(chosen.items()):
        c = hits[i].chunk
        s, e = by_hit[i][j]
        text = c.text[s:e]
        if len(text) > max_chars:  # one giant "sentence" (a list without punctuation): keep its head
            text, e = text[:max_chars] + "…", s + max_chars
        out.append(Evidence(i + 1, text, c.source, c.line + c.text.count("\n", 0, s), c.start + s, c.start + e, score))
    return out


def passage_of(chunk):
    """A chunk as a passage the model can link (rag.generators.linking): its heading, then its text in
    sentence pieces, cut exactly where the evidence sentences are cut, so each quoted sentence is one
    piece."""
    from .generators.linking import Passage

    pieces = [chunk.heading, "\n"] if chunk.heading else []
    prev = 0
    for s, e in split_sentences(chunk.text):
        pieces += [chunk.text[prev:s], chunk.text[s:e]]
        prev = e
    pieces.append(chunk.text[prev:])
    return Passage(tuple(p for p in pieces if p))


def _quote_rank(e: Evidence) -> float:
    return e.score + QUOTE_TOP_PASSAGE * (e.n == 1)


def quoted(evidence: list[Evidence]) -> Evidence:
    """The sentence an answer opens with, quoted verbatim: the best-scored one, the top passage's ahead on
    near-ties (QUOTE_TOP_PASSAGE: the quote held the gold sentence for 35.4% of the tuning questions
    against 33.3% by score alone; `rag eval evidence`). A sentence that only
    announces what follows ("原因如下：") is quoted together with the sentence after it, which holds
    the content (they were chosen together)."""
    i = max(range(len(evidence)), key=lambda k: _quote_rank(evidence[k]))
    top = evidence[i]
    nxt = evidence[i + 1] if i + 1 < len(evidence) else None
    if nxt and LEANS_ON_NEXT.search(top.text) and nxt.n == top.n and nxt.start >= top.end:
        return Evidence(top.n, top.text + nxt.text, top.source, top.line, top.start, nxt.end, top.score)
    return top


def quotes(evidence: list[Evidence]) -> list[Evidence]:
    """What the answer quotes, in the note's order: `quoted`'s sentence, and the next best sentence of
    the same passage when it scores within QUOTE_SECOND of it (one passage: one citation)."""
    top = quoted(evidence)
    rest = [e for e in evidence if e.n == top.n and (e.end <= top.start or e.start >= top.end)]
    if not rest:
        return [top]
    second = max(rest, key=_quote_rank)
    if _quote_rank(second) < QUOTE_SECOND * _quote_rank(top) or len(top.text) + len(second.text) > QUOTE_MAX_CHARS:
        return [top]
    return sorted([top, second], key=lambda e: e.start)


def best_score(evidence: list[Evidence]) -> float:
    return max((e.score for e in evidence), default=0.0)
