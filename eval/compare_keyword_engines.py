"""Which on-disk engine for the keyword legs? SQLite FTS5 (bm25()) vs tantivy, same documents, same queries.

    python eval/compare_keyword_engines.py 100000

Documents: the seed notes' sentences recombined (3-8 per document), indexed as their character
bigrams (rag.lexical.bigrams, space-joined; the harder leg: more terms per query, longer postings).
Each query is an OR of its bigrams ranked by BM25, top 30. Prints build time, size on disk and the
mean latency of each query over 5 runs. Results are quoted in eval/results/scale.md.
"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.lexical import bigrams  # noqa: E402

QUERIES = ["梯度消失的原因是什么", "测试的时候要用dropout吗", "为什么要用批归一化", "学习率太大会怎样", "红烧肉怎么做才好吃"]


def documents(n: int) -> list[str]:
    root = Path(__file__).resolve().parent.parent / "corpus"
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(root.iterdir()) if p.suffix in (".txt", ".md"))
    sents = [s.strip() for s in re.split(r"(?<=[。！？；\n])", text) if len(s.strip()) > 4]
    rng = random.Random(0)
    return [" ".join(bigrams("".join(rng.sample(sents, rng.randint(3, 8))))) for _ in range(n)]


def fts5(docs: list[str], work: Path) -> dict:
    db = work / "fts.sqlite"
    con = sqlite3.connect(db)
    t = time.perf_counter()
    con.execute("CREATE VIRTUAL TABLE b USING fts5(t, content='', tokenize=\"unicode61 remove_diacritics 0\")")
    con.executemany("INSERT INTO b(rowid, t) VALUES (?, ?)", enumerate(docs))
    con.commit()
    con.execute("INSERT INTO b(b) VALUES('optimize')")
    con.commit()
    out = {"build_s": time.perf_counter() - t, "mb": db.stat().st_size / 2**20, "ms": {}}
    for q in QUERIES:
        match = " OR ".join(f'"{t}"' for t in dict.fromkeys(bigrams(q)))
        t = time.perf_counter()
        for _ in range(5):
            con.execute("SELECT rowid, bm25(b) FROM b WHERE b MATCH ? ORDER BY rank LIMIT 30", (match,)).fetchall()
        out["ms"][q] = (time.perf_counter() - t) * 200
    con.close()
    return out


def tantivy_(docs: list[str], work: Path) -> dict:
    import tantivy

    path = work / "tantivy"
    path.mkdir()
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("b", stored=False, tokenizer_name="ws", index_option="freq")
    schema = sb.build()
    index = tantivy.Index(schema, path=str(path))
    index.register_tokenizer("ws", tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())
    t = time.perf_counter()
    w = index.writer(heap_size=200_000_000, num_threads=1)
    for d in docs:
        w.add_document(tantivy.Document(b=d))
    w.commit()
    w.wait_merging_threads()
    index.reload()
    out = {"build_s": time.perf_counter() - t, "mb": sum(f.stat().st_size for f in path.iterdir()) / 2**20, "ms": {}}
    s = index.searcher()
    for q in QUERIES:
        query = tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(schema, "b", t))
                                             for t in dict.fromkeys(bigrams(q))])
        t = time.perf_counter()
        for _ in range(5):
            s.search(query, 30, count=False)
        out["ms"][q] = (time.perf_counter() - t) * 200
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    docs = documents(n)
    work = Path(tempfile.mkdtemp(prefix="kw-engines-"))
    try:
        for name, fn in (("sqlite-fts5", fts5), ("tantivy", tantivy_)):
            r = fn(docs, work)
            lat = ", ".join(f"{q[:6]}… {ms:.1f}" for q, ms in r["ms"].items())
            print(f"{name:12s} {n:,} docs: build {r['build_s']:.1f} s, {r['mb']:.1f} MB; query ms: {lat}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
