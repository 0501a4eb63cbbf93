"""The heading legs: a question that reads like a chunk's heading finds that chunk, the heading legs
see headings only, and an index whose keyword store predates the heading
fields is rebuilt by the next `rag index`."""

from __future__ import annotations

import json

from rag.corpus import scan_sources
from rag.fakes import FakeEmbedder
from rag.generations import current_generation, read_manifest
from rag.index import build_index, load_index
from rag.keyword_index import META
from rag.retriever import Retriever

NOTES = """1. 为什么要用残差连接?
它让深层网络更容易训练,信息可以跳过若干层直接传下去。

2. 网络很深时会遇到什么问题?
网络很深时梯度会变小。残差连接、残差块、残差映射都是为此设计的:残差连接把输入加到输出上,残差连接
在很多模型里都有,残差连接的实现很简单。
"""


def build(corpus, index_dir):
    emb = FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb)


def test_a_question_like_the_heading_finds_its_chunk_first(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.md").write_text(NOTES, encoding="utf-8")
    build(tmp_path / "c", tmp_path / "index")
    r = Retriever(load_index(tmp_path / "index"), FakeEmbedder())
    hits = r.search("为什么要用残差连接", 2).hits
    assert hits[0].chunk.heading.startswith("为什么要用残差连接")
    assert hits[0].heading is not None and hits[0].to_dict()["heading_bm25"] > 0
    # the body legs find both chunks (the second says 残差连接 four times); the heading leg only the first
    assert len(r.index.bm25.legs["jieba"].search("残差连接", 5)) == 2
    heading_hits = r.index.bm25.heading_legs["heading_jieba"].search("残差连接", 5)
    assert [r.index.chunks[h.row].heading for h in heading_hits] == ["为什么要用残差连接?"]
    assert hits[1].heading is None  # its heading shares no word with the question
    assert r.search("为什么要用残差连接", 2, mode="dense").hits[0].heading is None  # dense mode: no keyword legs


def test_a_keyword_store_without_heading_fields_is_rebuilt_by_the_next_build(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.md").write_text(NOTES, encoding="utf-8")
    build(tmp_path / "c", tmp_path / "index")
    manifest = read_manifest(current_generation(tmp_path / "index"))
    meta = tmp_path / "index" / manifest["keyword"]["dir"] / META
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), format="tantivy-1")))  # as an older build wrote it
    warnings = []
    emb = FakeEmbedder()
    report = build_index(scan_sources([tmp_path / "c"]), tmp_path / "index", emb.model_id, lambda: emb,
                         warn=warnings.append)
    assert any("rebuilding" in w for w in warnings) and report.embedded == 0
    r = Retriever(load_index(tmp_path / "index"), FakeEmbedder())
    assert r.search("为什么要用残差连接", 1).hits[0].heading is not None
