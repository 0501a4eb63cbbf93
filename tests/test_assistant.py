import pytest

from rag.fakes import FakeEmbedder, FakeGenerator
from rag.assistant import Assistant
from rag.errors import QueryError
from rag.retriever import clean_query


def test_first_ask_builds_the_index_and_cites(assistant):
    events = list(assistant.ask("测试的时候要用 Dropout 吗?"))
    kinds = [e.kind for e in events]
    assert kinds[0] == "retrieved" and kinds[-1] == "done" and "token" in kinds
    ans = events[-1].answer
    assert not ans.abstained
    assert ans.sources and ans.sources[0][1].chunk.source == "notes.md"
    assert "Dropout" in ans.sources[0][1].chunk.heading
    assert ans.checked.cited == [1] and "[1]" in ans.text
    assert (assistant.settings.index_dir / "CURRENT").exists()


def test_uncovered_question_abstains_without_calling_the_llm(settings):
    gen = FakeGenerator()
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    ans = a.answer("红烧肉怎么做才好吃？")
    assert ans.abstained and ans.sources == [] and gen.prompts == []
    assert "没有" in ans.text and ans.hits  # closest passages are still shown


def test_invented_citations_are_removed(settings):
    a = Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator("学习率过大会导致震荡 [9]。"))
    ans = a.answer("学习率太大会怎样?")
    assert 9 in ans.checked.removed
    assert all(1 <= n <= len(ans.hits) for n, _ in ans.sources)


@pytest.mark.parametrize("q", ["", "   \n\t", None])
def test_empty_query(q):
    with pytest.raises(QueryError, match="empty"):
        clean_query(q)


def test_overlong_and_control_characters():
    with pytest.raises(QueryError, match="too long"):
        clean_query("字" * 100_000)
    assert clean_query("梯度\x00消失\x07") == "梯度 消失"


def test_search_modes_and_reload_after_rebuild(assistant, settings):
    r = assistant.search("梯度爆炸 怎么办", k=3)
    assert r.hits[0].chunk.source == "grad.txt"
    assert assistant.search("梯度爆炸", mode="bm25").hits and assistant.search("梯度爆炸", mode="dense").hits
    (settings.corpus_dir / "rf.md").write_text("1. 什么是感受野?\n感受野是输出特征图上一个点在输入上对应的区域。\n", encoding="utf-8")
    assistant.build()
    assert assistant.search("感受野是什么").hits[0].chunk.source == "rf.md"


def test_history_rewrites_the_query(settings):
    gen = FakeGenerator("学习率太大会怎样?")
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    events = list(a.ask("那它太大呢?", history=[("学习率是什么", "学习率控制步长 [1]。")]))
    assert events[0].text == "学习率太大会怎样?"


def test_model_declining_is_reported_as_abstention(settings):
    a = Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator("资料中没有相关内容。"))
    ans = a.answer("学习率太大会怎样?")
    assert ans.abstained and ans.sources == [] and ans.hits
