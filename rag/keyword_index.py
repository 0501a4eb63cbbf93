"""Keyword legs on disk: BM25 over jieba words and CJK bigrams in a tantivy inverted index.

Why tantivy (measured in eval/results/scale.md): SQLite FTS5 scores every document that matches any
query term, so an OR over the ~10 terms of a Chinese question costs ~50-130 ms at 100k chunks and
grows linearly; tantivy skips non-competitive documents (block-max WAND) and answered the same
queries in under 1 ms at 100k, from a 3x smaller index. Its BM25 is the formula of rag.lexical.BM25
(k1 1.2, b 0.75, idf ln(1 + (N - n + 0.5) / (n + 0.5))), so scores and the eval numbers carry over;
document lengths are stored as tantivy's 1-byte field norms (a small rounding of long documents).

The analyzers stay ours (rag.lexical.tokenize / bigrams, the glossary at query time); tantivy only
splits our space-joined tokens. One tantivy document per chunk:
    docid   u64, indexed + fast: a stable id; a generation's chunk table maps its rows to docids
    jieba   jieba words (term frequencies, no positions)
    bigram  character bigrams and whole Latin words
    terms   stored: the chunk's distinct jieba words, for the coverage signal

Generations share one store (index/keyword-<name>/), so an incremental build adds only the new
chunks' documents (a tantivy commit is atomic; a crash leaves the last commit). A generation sees
exactly the docids in its own chunk table: documents a newer build added, or a crashed build left,
are skipped by an older reader; the documents of removed chunks are deleted once no kept generation
has them (rag.generations passes the list on). Document counts and average lengths in BM25 include those
few not-yet-deleted documents, which moves scores negligibly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import IndexCorrupt
from .lexical import ANALYZERS, LexicalHit, analyze_query, idf

FORMAT = "tantivy-1"
ANALYZER_VERSION = 1  # bump when rag.lexical.tokenize / bigrams change what they emit
META = "rag-keyword.json"  # our fingerprint, next to tantivy's own meta.json
TOKENIZER = "rag_ws"
MAX_TERM_CHARS = 64  # longer "words" (base64 blobs, 20 MB lines without spaces) are never queried
WRITER_HEAP = 256 * 1024 * 1024
LEGS = ("jieba", "bigram")


def fingerprint() -> dict:
    """What the stored documents depend on: a change means a new store (a full keyword rebuild)."""
    import jieba

    return {"format": FORMAT, "analyzers": ANALYZER_VERSION, "jieba": getattr(jieba, "__version__", "?")}


def terms(text: str, leg: str) -> list[str]:
    """The analyzer's tokens as the index stores them (whitespace inside a token would split it)."""
    return [t.replace(" ", "_") for t in ANALYZERS[leg](text) if len(t) <= MAX_TERM_CHARS and not any(
        c.isspace() for c in t)]


def _schema():
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_unsigned_field("docid", stored=False, indexed=True, fast=True)
    for leg in LEGS:
        sb.add_text_field(leg, stored=False, tokenizer_name=TOKENIZER, index_option="freq")
    sb.add_bytes_field("terms", stored=True)
    return sb.build()


def _open(path: Path, create: bool = False):
    import tantivy

    path = Path(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(_schema(), path=str(path))
    else:
        if not (path / "meta.json").is_file():
            raise IndexCorrupt(f"keyword index {path} is missing; run `rag index --rebuild`")
        index = tantivy.Index.open(str(path))
    index.register_tokenizer(TOKENIZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())
    return index


def read_meta(path: Path) -> dict:
    try:
        return json.loads((Path(path) / META).read_text())
    except (OSError, ValueError):
        return {}


class KeywordWriter:
    """Adds and deletes chunk documents in one store; nothing is visible until commit()."""

    def __init__(self, path: Path, create: bool = False):
        self.path = Path(path)
        if create:
            (self.path / META).parent.mkdir(parents=True, exist_ok=True)
        self.index = _open(self.path, create=create)
        if create:
            (self.path / META).write_text(json.dumps(fingerprint()))
        self.writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=1)
        self.pending = 0

    def add(self, docids: Sequence[int], texts: Sequence[str], progress: Callable | None = None,
            legs: Sequence[str] = LEGS) -> None:
        """`legs` leaves the other fields empty (only `rag bench scale`'s one-leg measurement does)."""
        import tantivy

        bar = progress(total=len(texts), desc="keywords", unit="chunk") if progress and len(texts) > 1 else None
        try:
            for i, (docid, text) in enumerate(zip(docids, texts)):
                words = terms(text, "jieba") if "jieba" in legs else []
                doc = tantivy.Document()
                doc.add_unsigned("docid", int(docid))
                doc.add_text("jieba", " ".join(words))
                doc.add_text("bigram", " ".join(terms(text, "bigram")) if "bigram" in legs else "")
                doc.add_bytes("terms", " ".join(sorted(set(words))).encode())
                self.writer.add_document(doc)
                self.pending += 1
                if bar and i % 256 == 255:
                    bar.update(256)
            if bar:
                bar.update(len(texts) % 256)
        finally:
            if bar:
                bar.close()

    def delete(self, docids: Iterable[int]) -> None:
        import tantivy

        docids = [int(d) for d in docids]
        # (delete_documents_by_term does not match u64 fields in tantivy-py 0.27; a term-set query does)
        for i in range(0, len(docids), 10_000):
            self.writer.delete_documents_by_query(
                tantivy.Query.term_set_query(self.index.schema, "docid", docids[i:i + 10_000]))
            self.pending += 1

    def delete_from(self, first_docid: int) -> None:
        """Delete every document with docid >= first_docid (what a crashed build added)."""
        import tantivy

        q = tantivy.Query.range_query(self.index.schema, "docid", tantivy.FieldType.Unsigned, lower_bound=int(first_docid))
        self.writer.delete_documents_by_query(q)
        self.pending += 1

    def commit(self) -> None:
        """Atomic: tantivy writes the segments, then replaces its meta.json."""
        if self.pending:
            self.writer.commit()
            self.pending = 0
        self.writer.wait_merging_threads()  # also releases the writer's lock file

    def rollback(self) -> None:
        try:
            self.writer.rollback()
        finally:
            self.writer.wait_merging_threads()


class KeywordLeg:
    """BM25 over one analyzer's field of a backend (this module's tantivy store, or Milvus), with the
    glossary expansion and the coverage signal of rag.lexical.BM25. A backend provides
    bm25(field, weights, k, with_terms) -> [(row, score, distinct jieba words or None)],
    doc_freq(term) and total(). Only the jieba leg computes coverage (the retriever's abstain signal)."""

    def __init__(self, backend, name: str):
        self.backend = backend
        self.analyzer = name
        self.analyze = lambda text: terms(text, name)

    def __len__(self) -> int:
        return len(self.backend)

    def doc_freq(self, term: str) -> int:
        """How many live chunks contain `term` (one of this leg's analyzed terms)."""
        return self.backend.doc_freq(term)

    def search(self, query: str, k: int = 10, expand: bool = True) -> list[LexicalHit]:
        q = analyze_query(query, self.analyze, expand)
        base, weights = q.base, q.weights
        if not weights:
            return []
        coverage = self.analyzer == "jieba"
        hits = self.backend.bm25(self.analyzer, weights, k, with_terms=coverage)
        if not hits or not coverage:
            return [LexicalHit(row, score, 0.0) for row, score, _ in hits]
        # Coverage exactly as rag.lexical.BM25: share of the query's IDF mass whose words (or a
        # glossary equivalent of them) the document contains; unseen words get the largest IDF.
        alternatives = q.alternatives
        n = self.backend.total()
        term_idf = {t: idf(n, self.backend.doc_freq(t)) for t in base}
        total = sum(term_idf.values()) or 1.0
        out = []
        for row, score, doc in hits:
            matched = sum(v for t, v in term_idf.items()
                          if t in doc or any(alt and alt <= doc for alt in alternatives.get(t, ())))
            out.append(LexicalHit(row, score, matched / total))
        return out


class MilvusKeywords:
    """Both keyword legs served by a Milvus collection (rag.milvus_store, `--store milvus`)."""

    def __init__(self, collection):
        if not getattr(collection, "keywords", False):
            raise IndexCorrupt(f"Milvus collection {collection.collection} has no keyword fields; run `rag index --rebuild`")
        self.collection = collection
        self.path = None
        self.legs = {name: KeywordLeg(collection, name) for name in LEGS}

    def __len__(self) -> int:
        return len(self.collection)

    def search(self, query: str, k: int = 10) -> list[LexicalHit]:
        return self.legs["jieba"].search(query, k)

    def num_documents(self) -> int:
        return len(self.collection)


class KeywordIndex:
    """One generation's view of the shared store: `docids[row]` is the document of chunk `row`."""

    def __init__(self, path: Path, docids: np.ndarray):
        self.path = Path(path)
        if not self.path.is_dir():
            raise IndexCorrupt(f"keyword index {self.path} is missing; run `rag index --rebuild`")
        meta = read_meta(self.path)
        want = fingerprint()
        if meta != want:
            raise IndexCorrupt(f"keyword index {self.path} was built as {meta or 'unknown'}, this version "
                               f"needs {want}; run `rag index --rebuild`")
        try:
            self.index = _open(self.path)
        except IndexCorrupt:
            raise
        except Exception as e:  # tantivy raises ValueError on damaged files
            raise IndexCorrupt(f"keyword index {self.path} cannot be read ({e}); run `rag index --rebuild`") from None
        self.schema = self.index.schema
        self.docids = np.asarray(docids, dtype=np.int64)
        self._order = np.argsort(self.docids, kind="stable")
        self._sorted = self.docids[self._order]
        self._searcher = self.index.searcher()
        self.legs = {name: KeywordLeg(self, name) for name in LEGS}

    def __len__(self) -> int:
        return len(self.docids)

    def rows_of(self, docids: Sequence[int]) -> np.ndarray:
        """Rows of `docids` in this generation, -1 for documents it does not have."""
        d = np.asarray(docids, dtype=np.int64)
        pos = np.searchsorted(self._sorted, d)
        pos = np.minimum(pos, len(self._sorted) - 1) if len(self._sorted) else pos
        found = (len(self._sorted) > 0) & (self._sorted[pos] == d) if len(self._sorted) else np.zeros(len(d), bool)
        return np.where(found, self._order[pos] if len(self._sorted) else -1, -1)

    def bm25(self, field: str, weights: dict[str, float], k: int, with_terms: bool = False) -> list[tuple]:
        import tantivy

        # (boost only where needed: a plain disjunction of term queries keeps block-max WAND pruning)
        clauses = [(tantivy.Occur.Should, q if w == 1.0 else tantivy.Query.boost_query(q, w))
                   for t, w in weights.items() for q in [tantivy.Query.term_query(self.schema, field, t)]]
        searcher = self._searcher
        hits = self.visible(searcher, tantivy.Query.boolean_query(clauses), k)
        if not with_terms:
            return [(row, score, None) for row, score, _ in hits]
        return [(row, score, set(bytes(searcher.doc(a)["terms"][0]).decode().split())) for row, score, a in hits]

    def doc_freq(self, term: str) -> int:
        return int(self._searcher.doc_freq("jieba", term))

    def total(self) -> int:
        return int(self._searcher.num_docs)

    def visible(self, searcher, query, k: int) -> list[tuple[int, float, object]]:
        """Top k (row, score, address) among this generation's documents. Documents of other
        generations are few (one build's changes), so one over-fetch almost always suffices."""
        limit = k + 16
        while True:
            hits = searcher.search(query, limit, count=False).hits
            if not hits:
                return []
            addrs = [a for _, a in hits]
            rows = self.rows_of(searcher.fast_field_values("docid", addrs))
            out = [(int(r), float(sc), a) for (sc, a), r in zip(hits, rows) if r >= 0]
            if len(out) >= k or len(hits) < limit:
                return out[:k]
            limit *= 4

    def search(self, query: str, k: int = 10) -> list[LexicalHit]:
        """The jieba leg alone (its coverage is the abstain signal); see Retriever for fusion."""
        return self.legs["jieba"].search(query, k)

    def num_documents(self) -> int:
        return int(self._searcher.num_docs)
