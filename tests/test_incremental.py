"""Incremental builds over the shared stores (rag.chunk_store, rag.vector_segments): adding, changing
and deleting a file give what a full rebuild gives; a reader holding an older generation keeps its
results while updates run; an update that dies between its steps leaves the previous generation
serving and the next build clean; a damaged or missing segment is a typed error, then rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_sample_corpus
from rag import index as index_mod
from rag import vector_segments
from rag.chunk_store import STORE_DB
from rag.corpus import scan_sources
from rag.errors import IndexCorrupt
from rag.fakes import FakeEmbedder
from rag.generations import CURRENT, MANIFEST, current_generation
from rag.index import build_index, load_index
from rag.retriever import Retriever

TOPICS = ["卷积", "池化", "梯度", "注意力", "归一化", "正则化", "优化器", "学习率", "激活函数", "残差连接"]
QUERIES = ["什么是卷积", "梯度消失怎么办", "注意力机制的作用", "学习率如何设置", "残差连接为什么有效",
           "池化层的作用", "批归一化", "Adam 优化器"]


def topic_file(i: int, units: int = 4) -> str:
    t = TOPICS[i % len(TOPICS)]
    return "\n".join(f"{u + 1}. {t}的第{u + 1}个问题是什么?\n{t}在第{i}篇笔记里的回答{u}：{t}与模型训练有关，"
                     f"要点{u * 7 % 5}是{TOPICS[(i + u) % len(TOPICS)]}。\n" for u in range(units))


@pytest.fixture
def corpus(tmp_path):
    d = write_sample_corpus(tmp_path / "corpus")
    for i in range(6):
        (d / f"topic{i}.md").write_text(topic_file(i), encoding="utf-8")
    return d


def build(corpus: Path, index_dir: Path, emb=None, **kw):
    emb = emb or FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, **kw)


def results(index_dir: Path, idx=None, mode: str = "hybrid") -> list:
    """Every query's top 5: chunk ids and rounded scores (dense cosines compared exactly)."""
    idx = idx or load_index(index_dir)
    r = Retriever(idx, FakeEmbedder())
    out = []
    for q in QUERIES:
        hits = r.search(q, 5, mode=mode).hits
        out.append([(h.chunk.id, h.chunk.text, None if h.dense is None else round(h.dense, 5)) for h in hits])
    return out


def dense(idx) -> list:
    """Per query: the top 8 cosines, and the chunks scoring above the 8th (ties at the cut may swap)."""
    emb = FakeEmbedder()
    s, rows = idx.vectors.search(np.stack([emb.embed_query(q) for q in QUERIES]), 8)
    out = []
    for ss, rr in zip(s, rows):
        hits = [(idx.chunks[int(r)].id, round(float(x), 5)) for x, r in zip(ss, rr) if r >= 0]
        out.append(([x for _, x in hits], {c for c, x in hits if x > hits[-1][1]}))
    return out


def rebuilt(corpus: Path, tmp_path: Path, name: str = "fresh"):
    build(corpus, tmp_path / name, rebuild=True)
    return load_index(tmp_path / name)


def segments(index_dir: Path) -> list[str]:
    m = json.loads((current_generation(index_dir) / MANIFEST).read_text())
    return [s["role"] for s in m["vector_index"]["segments"]]


def test_add_change_delete_give_what_a_rebuild_gives(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    steps = [("add", lambda: (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")),
             ("change", lambda: (corpus / "topic2.md").write_text(topic_file(2) + topic_file(7, 2), encoding="utf-8")),
             ("delete", lambda: (corpus / "topic4.md").unlink())]
    for i, (what, change) in enumerate(steps):
        change()
        emb = FakeEmbedder()
        report = build(corpus, index_dir, emb)
        idx, fresh = load_index(index_dir), rebuilt(corpus, tmp_path, f"fresh{i}")
        assert sorted(c.id for c in idx.chunks) == sorted(c.id for c in fresh.chunks), what
        assert {c.id: c for c in idx.chunks} == {c.id: c for c in fresh.chunks}  # texts, lines, file hashes
        assert dense(idx) == dense(fresh), what  # flat base + flat deltas: exact
        if what == "add":  # the keyword store holds exactly the rebuild's documents: same BM25
            assert results(index_dir, idx) == results(index_dir, fresh)
        else:  # documents of removed chunks still count in BM25 statistics until deleted
            same = sum(a == b for a, b in zip(results(index_dir, idx), results(index_dir, fresh)))
            assert same >= len(QUERIES) - 1, what
        assert segments(index_dir) == ["base"] + ["delta"] * (1 + (what != "add")) if what != "delete" else True
        if what == "change":  # unchanged units of the file keep their embeddings: only new text is embedded
            assert report.embedded == 2 and report.changed == ["topic2.md"]
        if what == "delete":
            assert report.embedded == 0 and emb.calls == 0 and report.removed == ["topic4.md"]


def test_only_new_rows_are_written_and_the_store_is_shared(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    m0 = json.loads((current_generation(index_dir) / MANIFEST).read_text())
    store = index_dir / m0["store"]["dir"]
    base = [f for s in m0["vector_index"]["segments"] for f in s["files"]]
    stat0 = {f: (store / f).stat().st_mtime_ns for f in base}
    (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")
    report = build(corpus, index_dir)
    m1 = json.loads((current_generation(index_dir) / MANIFEST).read_text())
    assert m1["store"]["dir"] == m0["store"]["dir"] and m1["keyword"]["dir"] == m0["keyword"]["dir"]
    assert {f: (store / f).stat().st_mtime_ns for f in base} == stat0  # the base segment is not rewritten
    assert m1["store"]["next_docid"] == m0["store"]["next_docid"] + report.embedded
    assert set(report.timings) >= {"chunk_store", "keywords", "vectors", "write"}


def test_a_reader_keeps_its_generation_until_the_second_build_after_it(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    old = load_index(index_dir)
    before = results(index_dir, old)
    grad_rows = [i for i, c in enumerate(old.chunks) if c.source == "grad.txt"]
    (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")
    build(corpus, index_dir)  # B: adds
    assert results(index_dir, old) == before
    (corpus / "grad.txt").unlink()
    (corpus / "topic1.md").write_text(topic_file(1) + topic_file(8, 1), encoding="utf-8")
    build(corpus, index_dir)  # C: removes grad.txt, changes topic1 (rows kept for B, the previous generation)
    assert results(index_dir, old) == before
    assert [old.chunks[i].source for i in grad_rows] == ["grad.txt"] * len(grad_rows)
    (corpus / "topic9.md").unlink()
    build(corpus, index_dir)  # D: C is now the previous generation; rows only B and older showed go
    with pytest.raises(IndexCorrupt, match="reload"):
        [old.chunks[i] for i in grad_rows]
    assert results(index_dir) == results(index_dir, load_index(index_dir))  # the live index is whole


@pytest.mark.parametrize("die_in", ["update_keywords", "update_vectors", "write_generation"])
def test_an_update_dying_between_its_steps_leaves_the_previous_generation_serving(corpus, tmp_path, monkeypatch, die_in):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")
    (corpus / "grad.txt").unlink()
    live = (index_dir / CURRENT).read_text()
    before = results(index_dir)

    def die(*a, **k):
        raise KeyboardInterrupt  # like a kill: nothing of the build's own cleanup runs after the step

    monkeypatch.setattr(index_mod, die_in, die)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, index_dir)
    monkeypatch.undo()
    assert (index_dir / CURRENT).read_text() == live
    idx = load_index(index_dir)  # what the dead build appended is invisible to the live generation
    assert results(index_dir, idx) == before and not any(c.source == "topic9.md" for c in idx.chunks)
    report = build(corpus, index_dir)
    assert report.added == ["topic9.md"] and report.removed == ["grad.txt"]
    idx, fresh = load_index(index_dir), rebuilt(corpus, tmp_path)
    assert sorted(c.id for c in idx.chunks) == sorted(c.id for c in fresh.chunks)
    assert dense(idx) == dense(fresh)
    m = idx.manifest
    assert idx.bm25.num_documents() == len(idx.chunks) + len(m["keyword"]["removed"])  # the dead build's documents are gone
    import sqlite3

    con = sqlite3.connect(index_dir / m["store"]["dir"] / STORE_DB)
    assert con.execute("SELECT count(*) FROM chunks").fetchone()[0] == len(idx.chunks) + len(m["store"]["removed"])
    con.close()
    names = {f.name for f in (index_dir / m["store"]["dir"]).iterdir() if f.name.startswith("vec-")}
    kept = {f for g in index_dir.glob("gen-*") for s in json.loads((g / MANIFEST).read_text())["vector_index"]["segments"]
            for f in s["files"]}
    assert names == kept  # the dead build's segment file is cleaned up


def test_deltas_compact_into_a_new_base_and_many_deltas_merge(corpus, tmp_path, monkeypatch):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    monkeypatch.setattr(vector_segments, "MAX_DELTAS", 2)
    from rag import generations

    monkeypatch.setattr(generations, "MAX_DELTAS", 2)
    for i in (7, 8, 9):
        (corpus / f"topic{i}.md").write_text(topic_file(i), encoding="utf-8")
        build(corpus, index_dir)
    assert segments(index_dir) == ["base", "delta"]  # the third add found two deltas: one file for all three
    assert dense(load_index(index_dir)) == dense(rebuilt(corpus, tmp_path, "f1"))
    monkeypatch.setattr(vector_segments, "COMPACT_MIN_ROWS", 0)  # every stale row counts: compact now
    (corpus / "topic7.md").unlink()
    build(corpus, index_dir)
    assert segments(index_dir) == ["base"]
    idx = load_index(index_dir)
    assert idx.vectors.base.ntotal == len(idx.chunks)
    assert dense(idx) == dense(rebuilt(corpus, tmp_path, "f2"))


@pytest.mark.parametrize("kind", ["hnsw", "ivf-flat"])
def test_ann_bases_drop_removed_rows_at_query_time(corpus, tmp_path, kind):
    index_dir = tmp_path / "idx"
    req = {"index": kind, "store": "faiss"}
    build(corpus, index_dir, vector_request=req)
    (corpus / "topic3.md").unlink()
    (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")
    build(corpus, index_dir, vector_request=req)
    idx = load_index(index_dir)
    assert segments(index_dir) == ["base", "delta"] and idx.vectors.kind == kind
    got = dense(idx)
    assert all(len(scores) == 8 for scores, _ in got)
    assert not any(idx.chunks[r].source == "topic3.md" for q in QUERIES
                   for r in idx.vectors.search(FakeEmbedder().embed_query(q)[None], 50)[1][0] if r >= 0)


def test_a_missing_or_damaged_segment_is_a_typed_error_and_the_next_build_rebuilds(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")
    build(corpus, index_dir)
    m = json.loads((current_generation(index_dir) / MANIFEST).read_text())
    store = index_dir / m["store"]["dir"]
    delta = next(s for s in m["vector_index"]["segments"] if s["role"] == "delta")
    (store / f"{delta['name']}.ids.npy").unlink()
    with pytest.raises(IndexCorrupt, match=rf"{delta['name']}.ids.npy is missing.*rag index --rebuild"):
        load_index(index_dir)
    warnings = []
    emb = FakeEmbedder()
    build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, warn=warnings.append)
    assert any("rebuilding from scratch" in w for w in warnings)
    assert dense(load_index(index_dir)) == dense(rebuilt(corpus, tmp_path))
    m = json.loads((current_generation(index_dir) / MANIFEST).read_text())
    (index_dir / m["store"]["dir"] / STORE_DB).unlink()
    with pytest.raises(IndexCorrupt, match="chunks.sqlite is missing"):
        load_index(index_dir)


@pytest.mark.slow  # the packaged embedder (~10 s to load) over the 189-chunk corpus, indexed three times
def test_real_embedder_incremental_equals_rebuild_on_the_corpus(tmp_path):
    import shutil

    from conftest import ROOT
    from rag.assistant import Assistant
    from rag.config import Settings

    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    held = sorted((tmp_path / "corpus").iterdir())[-1]
    text = held.read_bytes()
    held.unlink()
    a = Assistant(Settings.from_env(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "idx"))
    a.build()
    held.write_bytes(text)
    report = a.build()  # the held-back file, added incrementally
    assert report.added == [held.name]
    assert 0 < report.embedded <= load_index(tmp_path / "idx").manifest["files"][held.name]["chunks"]
    fresh = a.derive(index_dir=tmp_path / "fresh")
    fresh.build()
    for q in ["一千万个人脸向量怎么快速找到新的人脸？", "BN 有什么作用", "为什么要用 1x1 卷积", "学习率太大会怎样"]:
        got, want = a.search(q, k=5), fresh.search(q, k=5)
        assert [h.chunk.id for h in got.hits] == [h.chunk.id for h in want.hits]
        assert [round(h.dense or 0, 5) for h in got.hits] == [round(h.dense or 0, 5) for h in want.hits]
        assert got.covered == want.covered


def test_unchanged_files_are_known_by_size_and_mtime_and_recent_ones_are_hashed(corpus, tmp_path, monkeypatch):
    import os

    index_dir = tmp_path / "idx"
    for f in corpus.iterdir():  # written "long ago": their size and mtime are recorded
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns - 10 * 10**9))
    build(corpus, index_dir)
    files = load_index(index_dir).manifest["files"]
    assert all(e["mtime_ns"] for e in files.values())
    hashed = []
    real = index_mod.file_sha256
    monkeypatch.setattr(index_mod, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    (corpus / "topic9.md").write_text(topic_file(9), encoding="utf-8")
    report = build(corpus, index_dir)
    assert hashed == ["topic9.md"] and report.added == ["topic9.md"]  # the others were not read
    assert load_index(index_dir).manifest["files"]["topic9.md"]["mtime_ns"] is None  # just written: not trusted
    # a same-size rewrite is found: by its new mtime, or, for a file too recent to trust, by its hash
    for name in ("topic1.md", "topic9.md"):
        p = corpus / name
        st = p.stat()
        p.write_text(p.read_text(encoding="utf-8").replace("回答", "答复"), encoding="utf-8")
        assert p.stat().st_size == st.st_size
        if name == "topic9.md":
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert build(corpus, index_dir).changed == [name]
