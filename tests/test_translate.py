"""English questions over Chinese notes are searched with a Chinese translation (rag.translate)."""

from dataclasses import replace

import pytest

from rag import prompts
from rag.assistant import Assistant
from rag.fakes import FakeEmbedder, FakeGenerator
from rag.translate import Translator, chinese_share, is_english, parse, search_text


@pytest.mark.parametrize("q,english", [
    ("Does an LSTM completely get rid of exploding gradients?", True),
    ("LSTM 能完全避免梯度爆炸吗?", False),
    ("BN?", False),  # a term, not a sentence
    ("why dropout", True),
])
def test_is_english(q, english):
    assert is_english(q) is english


def test_parse_takes_one_short_chinese_line():
    assert parse("LSTM 能否完全消除梯度爆炸？\n这个问题的意思是……") == "LSTM 能否完全消除梯度爆炸？"
    assert parse("  “批归一化有什么用？” ") == "批归一化有什么用？"
    assert parse("Sorry, I cannot translate this.") is None  # no Chinese: not a translation
    assert parse("梯度" * 200) is None  # the model talking, not translating
    assert parse("") is None


def test_search_text_keeps_the_question():
    assert search_text("What is BN?", "什么是 BN？") == "What is BN? 什么是 BN？"
    assert search_text("What is BN?", None) == "What is BN?"


def test_chinese_share():
    assert chinese_share(["梯度消失是什么", "ReLU"]) > 0.5
    assert chinese_share(["The vanishing gradient problem"]) == 0.0
    assert chinese_share([]) == 0.0


def test_translator_stops_at_the_first_line_and_remembers():
    gen = FakeGenerator("什么是批归一化？\nBatch normalization 是……")
    t = Translator(gen)
    assert t("What is batch normalization?") == "什么是批归一化？"
    assert t("What is batch normalization?") == "什么是批归一化？"
    assert len(gen.prompts) == 1  # the second time from memory
    assert gen.prompts[0][0]["content"] == prompts.TRANSLATE_SYSTEM
    assert gen.prompts[0][-1] == {"role": "user", "content": "What is batch normalization?"}


def test_english_question_is_searched_with_its_translation(settings):
    gen = FakeGenerator()  # translates by the glossary: exploding gradients -> 梯度爆炸
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    events = list(a.ask("How do you deal with exploding gradients?"))
    retrieved, done = events[0], events[-1].answer
    assert retrieved.retrieval.translation.startswith("梯度爆炸")
    assert done.query == "How do you deal with exploding gradients? " + retrieved.retrieval.translation
    assert done.hits[0].chunk.source == "grad.txt"
    assert "translate" in done.timings
    # the answer is written for the question as asked
    answer_prompts = [p for p in gen.prompts if p[0]["content"] == prompts.EVIDENCE_SYSTEM]
    assert answer_prompts and "How do you deal with exploding gradients?" in answer_prompts[-1][-1]["content"]


def test_chinese_questions_and_translate_off_are_searched_as_asked(settings):
    gen = FakeGenerator()
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    assert a.retrieve("梯度爆炸怎么办？").translation is None
    off = Assistant(replace(settings, translate="off"), embedder=FakeEmbedder(), generator=gen)
    r = off.retrieve("How do you deal with exploding gradients?")
    assert r.translation is None and r.query == "How do you deal with exploding gradients?"
    assert not any(p[0]["content"] == prompts.TRANSLATE_SYSTEM for p in gen.prompts)


def test_english_notes_are_not_translated_into(tmp_path, settings):
    corpus = tmp_path / "english"
    corpus.mkdir()
    (corpus / "notes.md").write_text("# Exploding gradients\nClip the gradient norm to keep updates bounded.\n",
                                     encoding="utf-8")
    s = replace(settings, corpus_dir=corpus, index_dir=tmp_path / "index-en")
    gen = FakeGenerator()
    a = Assistant(s, embedder=FakeEmbedder(), generator=gen)
    r = a.retrieve("How do you deal with exploding gradients?")
    assert r.translation is None and gen.prompts == []


def test_a_failed_translation_searches_the_question(settings):
    gen = FakeGenerator("I can't help with that.")
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    r = a.retrieve("How do you deal with exploding gradients?")
    assert r.translation is None and r.query == "How do you deal with exploding gradients?"


class _Translating(FakeGenerator):
    def __init__(self, translation: str):
        super().__init__()
        self.translation = translation

    def stream(self, messages, max_tokens=256, prefix="", passages=()):
        if messages[0]["content"] == prompts.TRANSLATE_SYSTEM:
            yield self.translation
            return
        yield from super().stream(messages, max_tokens, prefix, passages)


def test_unknown_names_are_read_from_the_translation(settings):
    # "Global Average Pooling": an English sentence capitalizes ordinary words; translated, they are Chinese
    a = Assistant(settings, embedder=FakeEmbedder(), generator=_Translating("全局平均池化能代替梯度裁剪吗？"))
    assert a.answer("Can Global Average Pooling replace gradient clipping?").unknown == []
    # a name the notes lack stays in the translation, and is declined
    a = Assistant(settings, embedder=FakeEmbedder(), generator=_Translating("LoRA 能缓解梯度爆炸吗？"))
    ans = a.answer("Can LoRA help with exploding gradients?")
    assert ans.abstained and ans.unknown == ["LoRA"]
