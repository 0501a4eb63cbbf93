"""The keyword legs on disk (tantivy): same results as the in-memory BM25, generations sharing one
store, incremental adds and deletes that touch only their documents, crash leftovers removed."""

import json

import numpy as np
import pytest

from rag.fakes import FakeEmbedder
from rag.errors import IndexCorrupt
from rag.chunk_store import read_docids
from rag.generations import CURRENT, DOCIDS, MANIFEST, current_generation
from rag.corpus import scan_sources
from rag.index import build_index, load_index
from rag.keyword_index import META, KeywordIndex, KeywordWriter
from rag.lexical import LexicalIndex

TEXTS = ["Dropout 只在训练时使用，测试时关闭", "学习率太大会震荡，太小收敛很慢", "GAN 由生成器和判别器组成",
         "Batch Normalization 把输出归一化，加快收敛", "梯度消失是因为激活函数饱和，反向传播连乘变小",
         "池化层降低特征图尺寸", "L1 正则化让权重稀疏，L2 正则化让权重变小"]
QUERIES = ["测试时要用 dropout 吗", "BN 的作用", "梯度消失的原因", "红烧肉怎么做", "gradient vanishing",
           "learning rate 太大", "正则化有什么用", "为什么要池化"]


def store(tmp_path, texts=TEXTS, docids=None):
    docids = list(range(len(texts))) if docids is None else docids
    w = KeywordWriter(tmp_path / "kw", create=True)
    w.add(docids, texts)
    w.commit()
    return tmp_path / "kw"


def build(corpus, index_dir, **kw):
    emb = FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, **kw)


def ranked(hits):
    return [(h.row, round(h.score, 4)) for h in hits]


def test_same_ranking_scores_and_coverage_as_the_reference_bm25(tmp_path):
    kw = KeywordIndex(store(tmp_path), np.arange(len(TEXTS)))
    ref = LexicalIndex.from_texts(TEXTS)
    for q in QUERIES:
        for leg in ("jieba", "bigram"):
            assert ranked(kw.legs[leg].search(q, 5)) == ranked(ref.legs[leg].search(q, 5)), (q, leg)
        assert [round(h.coverage, 4) for h in kw.search(q, 5)] == [round(h.coverage, 4) for h in ref.search(q, 5)]
    assert kw.search("红烧肉怎么做") == []


def test_a_generation_sees_only_its_own_documents(tmp_path):
    path = store(tmp_path, docids=[10, 11, 12, 13, 14, 15, 16])
    # this generation has docs 14 and 10 as rows 0 and 1; the others belong to other generations
    kw = KeywordIndex(path, np.array([14, 10]))
    hits = kw.legs["bigram"].search("梯度消失和 dropout", 10)
    assert sorted(h.row for h in hits) == [0, 1]
    assert len(kw) == 2 and kw.num_documents() == len(TEXTS)


def test_a_store_built_by_other_analyzers_is_refused(tmp_path):
    path = store(tmp_path)
    meta = json.loads((path / META).read_text())
    (path / META).write_text(json.dumps(dict(meta, analyzers=meta["analyzers"] + 1)))
    with pytest.raises(IndexCorrupt, match="rag index --rebuild"):
        KeywordIndex(path, np.arange(len(TEXTS)))


def keyword_dir(index_dir):
    gen = current_generation(index_dir)
    return index_dir / json.loads((gen / MANIFEST).read_text())["keyword"]["dir"]


def test_incremental_builds_share_one_store_and_delete_what_no_generation_needs(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    first = current_generation(index_dir)
    kdir = keyword_dir(index_dir)
    n0 = load_index(index_dir).bm25.num_documents()
    ids0 = read_docids(first / DOCIDS)

    (corpus / "new.md").write_text("1. 什么是感受野?\n感受野是输出特征图上一个点对应的输入区域。\n", encoding="utf-8")
    report = build(corpus, index_dir)
    assert report.added == ["new.md"] and keyword_dir(index_dir) == kdir  # same store, documents added
    idx = load_index(index_dir)
    ids1 = read_docids(idx.path / DOCIDS)
    assert set(ids0) < set(ids1) and idx.bm25.num_documents() == n0 + 1
    assert idx.chunks[idx.bm25.search("感受野", 1)[0].row].source == "new.md"

    (corpus / "grad.txt").unlink()
    build(corpus, index_dir)
    # the previous generation still has grad.txt's documents: they stay until it is gone
    idx2 = load_index(index_dir)
    assert idx2.bm25.num_documents() == n0 + 1
    assert all(idx2.chunks[h.row].source != "grad.txt" for h in idx2.bm25.search("梯度消失", 10))
    (corpus / "notes.md").write_text((corpus / "notes.md").read_text(encoding="utf-8") + "\n4. 什么是池化?\n池化降低尺寸。\n",
                                     encoding="utf-8")
    build(corpus, index_dir)
    idx3 = load_index(index_dir)
    assert keyword_dir(index_dir) == kdir
    # grad.txt's documents are deleted now; those this build removed stay for the previous generation
    assert idx3.bm25.num_documents() == len(idx3.chunks) + len(idx3.manifest["keyword"]["removed"])
    assert not idx3.bm25.search("梯度爆炸 裁剪", 5) or all(idx3.chunks[h.row].source != "grad.txt"
                                                        for h in idx3.bm25.search("梯度爆炸 裁剪", 5))


def test_documents_of_a_crashed_build_are_removed_by_the_next(corpus, tmp_path, monkeypatch):
    from rag import index as index_mod

    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    before = (index_dir / CURRENT).read_text()
    (corpus / "new.md").write_text("1. 什么是感受野?\n感受野是输出特征图上一个点对应的输入区域。\n", encoding="utf-8")

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_mod, "write_generation", crash)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, index_dir)
    monkeypatch.undo()
    assert (index_dir / CURRENT).read_text() == before
    idx = load_index(index_dir)  # the committed orphan documents are invisible to the live generation
    assert idx.bm25.num_documents() == len(idx.chunks) + 1
    assert all(idx.chunks[h.row].source != "new.md" for h in idx.bm25.search("感受野", 5))
    build(corpus, index_dir)
    idx = load_index(index_dir)
    assert idx.bm25.num_documents() == len(idx.chunks)
    assert idx.chunks[idx.bm25.search("感受野", 1)[0].row].source == "new.md"


def test_rebuild_makes_a_new_store_and_the_old_one_goes_with_its_generations(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    old = keyword_dir(index_dir)
    build(corpus, index_dir, rebuild=True)
    new = keyword_dir(index_dir)
    assert new != old and old.exists()  # the previous generation still uses it
    build(corpus, index_dir, rebuild=True)
    build(corpus, index_dir, rebuild=True)
    # exactly the stores the remaining generations use are left
    used = {json.loads((g / MANIFEST).read_text())["keyword"]["dir"] for g in index_dir.glob("gen-*")}
    assert sorted(p.name for p in index_dir.glob("keyword-*")) == sorted(used)
    assert keyword_dir(index_dir).exists() and len(used) == len(list(index_dir.glob("gen-*")))


def test_old_index_with_bm25_json_is_refused_and_rebuilt(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    gen = current_generation(index_dir)
    m = json.loads((gen / MANIFEST).read_text())
    m["format_version"] = 2
    del m["keyword"]
    (gen / MANIFEST).write_text(json.dumps(m))
    (gen / "bm25.json").write_text("{}")
    with pytest.raises(IndexCorrupt, match="rag index --rebuild"):
        load_index(index_dir)
    warnings = []
    emb = FakeEmbedder()
    build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, warn=warnings.append)
    assert any("rebuilding" in w for w in warnings)
    assert load_index(index_dir).bm25.search("dropout")


def test_missing_keyword_store_is_a_clear_error_and_the_next_build_repairs_it(corpus, tmp_path):
    import shutil

    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    shutil.rmtree(keyword_dir(index_dir))
    with pytest.raises(IndexCorrupt, match="keyword index .* is missing; run .rag index --rebuild"):
        load_index(index_dir)
    report = build(corpus, index_dir)  # nothing else changed: still not a no-op
    assert not report.up_to_date and report.embedded == 0
    idx = load_index(index_dir)
    assert idx.bm25.num_documents() == len(idx.chunks)
