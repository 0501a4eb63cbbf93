from rag.chunking import ChunkerSettings, chunk_document, split_units
from rag.loaders import load_file


def headings(text):
    return [h for h, _, _ in split_units(text)]


def test_question_markers_start_units():
    text = ("前言\n1. 介绍 BN 的意义\n答案一。\n**12。**为什么引入非线性？\n答案二。\n**19** 。测试集上是否使用了辍学？\n答案三。\n"
            "1、神经网络基础问题\n(3)常用的激活函数\n答案四。\n13。什么是端到端学习？\n答案五。\n## 小节标题\n内容。\n")
    hs = headings(text)
    assert hs[0] == ""
    assert "介绍 BN 的意义" in hs
    assert "为什么引入非线性？" in hs
    assert "测试集上是否使用了辍学？" in hs
    assert "神经网络基础问题 · 常用的激活函数" in hs
    assert "什么是端到端学习？" in hs
    assert "小节标题" in hs


def test_decimal_numbers_do_not_start_units():
    assert headings("学习率取 0.1 比较好\n3.5 倍的速度\n") == [""]


def test_chunks_keep_heading_span_and_stable_ids(corpus):
    doc = load_file(corpus / "notes.md")
    a = chunk_document(doc, ChunkerSettings(chunk_size=60, chunk_overlap=10))
    b = chunk_document(load_file(corpus / "notes.md"), ChunkerSettings(chunk_size=60, chunk_overlap=10))
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    drop = [c for c in a if "Dropout" in c.heading]
    assert drop and all(c.source == "notes.md" for c in drop)
    for c in a:
        assert len(c.text) <= 60
        assert doc.raw_text[c.start:c.end].replace("\n", "")[:5] == c.text.replace("\n", "")[:5]
        assert c.line >= 1
    assert drop[-1].embed_text().startswith(drop[-1].heading)


def test_chinese_sentence_boundaries():
    from rag.loaders import Document

    text = "1. 问题\n" + "这是一个很长的句子，用来测试中文分句。" * 20
    doc = Document(source="x.txt", text=text, sha256="0", encoding="utf-8", raw_text=text)
    chunks = chunk_document(doc, ChunkerSettings(chunk_size=50, chunk_overlap=0))
    assert len(chunks) > 3
    assert all(c.text.endswith(("。", "，", "问题")) for c in chunks[:-1])


def test_editing_one_unit_keeps_other_ids(corpus):
    p = corpus / "notes.md"
    before = {c.heading: c.id for c in chunk_document(load_file(p))}
    p.write_text(p.read_text(encoding="utf-8").replace("模型无法收敛", "模型不收敛"), encoding="utf-8")
    after = {c.heading: c.id for c in chunk_document(load_file(p))}
    changed = {h for h in before if before[h] != after.get(h)}
    assert changed == {"学习率太大会怎样?"}
