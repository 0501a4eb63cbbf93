"""End to end with the real packaged models (slow: builds the embedder once, loads the 1.5B LLM)."""

import shutil

import pytest

from rag.assistant import Assistant
from rag.config import Settings
from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    shutil.copytree(ROOT / "corpus", tmp / "corpus")
    s = Settings.from_env(corpus_dir=tmp / "corpus", index_dir=tmp / "index")
    a = Assistant(s)
    report = a.build()
    assert report.chunks > 150 and not report.skipped
    return a


def test_face_vector_question_finds_001_first(real):
    r = real.search("一千万个人脸向量怎么快速找到新的人脸？", k=5)
    assert r.covered
    assert r.hits[0].chunk.source == "dl_interview_12.txt" and "人脸" in r.hits[0].chunk.heading


@pytest.mark.parametrize("q,source,heading", [
    ("BN 有什么作用", None, "Batch"),
    ("What happens when the learning rate is too high?", None, "学习率"),
    ("为什么要用 1x1 卷积", "dl_interview_54.txt", "1×1"),
])
def test_paraphrases_and_english(real, q, source, heading):
    hits = real.search(q, k=5).hits
    assert any((source is None or h.chunk.source == source) and heading.lower() in (h.chunk.heading + h.chunk.text).lower()
               for h in hits)


def test_english_question_reaches_the_chinese_note_through_its_translation(real):
    # searched as asked, the gold note is not in the top 10; with the model's translation it is first
    q = "Is the convolution in a CNN the same as mathematical convolution?"
    r = real.retrieve(q, k=5)
    assert r.translation and "卷积" in r.translation
    assert any("翻转卷积核" in h.chunk.text for h in r.hits), r.translation


def test_dropout_answer_is_correct_and_cited(real):
    ans = real.answer("测试的时候要用 dropout 吗？")
    assert not ans.abstained and ans.sources
    cited_text = " ".join(h.chunk.embed_text() for _, h in ans.sources).lower()
    assert "dropout" in cited_text or "辍学" in cited_text
    assert any(w in ans.text for w in ("不", "没有", "只在训练", "No", "no")), ans.text
    for _, h in ans.sources:  # every citation resolves to the file and span it claims
        raw = (real.settings.corpus_dir / h.chunk.source).read_text(encoding="utf-8")
        assert h.chunk.text.split("\n")[0][:15] in raw[h.chunk.start:h.chunk.end + 1]


def test_out_of_corpus_question_abstains(real):
    ans = real.answer("红烧肉怎么做才好吃？")
    assert ans.abstained and not ans.sources and ans.hits


def test_new_markdown_file_becomes_answerable(real):
    (real.settings.corpus_dir / "extra.md").write_text(
        "# 补充\n\n1. 什么是 Swish 激活函数？\nSwish 激活函数定义为 x 乘以 sigmoid(x)，由 Google Brain 提出，在深层网络中常优于 ReLU。\n",
        encoding="utf-8")
    report = real.build()
    assert report.added == ["extra.md"] and report.embedded <= 3
    r = real.search("Swish 激活函数是什么", k=3)
    assert r.hits[0].chunk.source == "extra.md"


# ---------------------------------------------------------------- answers you can trust (issue: evidence first)

def test_contradiction_never_reaches_the_user(real):
    """The note says exploding gradients occur less often; the 1.5B reader, given that very sentence,
    has concluded the opposite. Neither the stream nor the final answer may say so."""
    events = list(real.ask("梯度爆炸跟梯度消失比哪个更常见？"))
    assert events[0].kind == "retrieved" and any("不如梯度消失" in e.text for e in events[0].evidence)
    shown = "".join(e.text for e in events if e.kind == "token")
    ans = events[-1].answer
    assert not ans.abstained
    for text in (shown, ans.text):
        assert "梯度爆炸比梯度消失更常见" not in text and "梯度爆炸更常见" not in text, text
    assert "不如梯度消失" in ans.text  # the evidence, quoted


def test_the_answer_quotes_the_passage_its_conclusion_rests_on(real):
    """A tuning question (tune_011): the quote chosen by overlap is a general GAN sentence of one passage,
    the reader concludes from another passage's V(D, G) sentence and cites that. The answer must quote
    the passage it cites (verify.requote), not one nothing in it rests on."""
    ans = real.answer("GAN 那个 minmax 目标函数里，V(D, G) 直观上可以理解成什么？")
    assert not ans.abstained and ans.text.startswith("依据["), ans.text
    quoted = int(ans.text[len("依据["):ans.text.index("]")])
    assert [n for n, _ in ans.sources] == [quoted], ans.text
    assert "差异" in ans.text


def test_paraphrase_with_few_shared_words_is_answered(real):
    ans = real.answer("梯度越往前传越小，有什么简单的处理办法？")
    assert not ans.abstained, (ans.p_covered, ans.text)
    assert ans.sources and ans.evidence


# "Kaiming 初始化为什么方差是 2/n？" is not here: the notes name Kaiming initialization without the
# derivation, and neither the calibrated judge (P(covered) 0.98) nor the sentence check catches the
# answer that restates the question's premise. Known miss, reported in eval/results/answers_blind.md.
# LoRA: a capitalized name no note has (declined before the model is asked); label smoothing: a lower-case
# term, declined by the calibrated signals (it is the "unseen terms" signal that tips it).
@pytest.mark.parametrize("q", ["LoRA 微调的原理是什么？", "label smoothing 标签平滑为什么能提升泛化？"])
def test_near_topic_question_is_declined_with_the_closest_passages(real, q):
    ans = real.answer(q)
    assert ans.abstained, (ans.p_covered, ans.text)
    assert ans.hits and not ans.sources
