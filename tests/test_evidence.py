"""Evidence selection, answer verification and the abstain calibration (fast: fake models)."""

import json
import random

import pytest

from rag import prompts
from rag.fakes import FakeEmbedder, FakeGenerator
from rag.abstain import Calibration, fit, load_calibration
from rag.assistant import Assistant
from rag.chunking import Chunk
from rag.evidence import Evidence, select_evidence, sentence_pieces, split_sentences
from rag.retriever import Hit
from rag.verify import polarity_conflict, releasable, requote, verify_answer


def hit(text, heading="", source="notes.md", start=0):
    return Hit(Chunk(id=str(hash(text)), source=source, heading=heading, text=text, start=start,
                     end=start + len(text), line=3, file_sha256="x"), 1.0)


def test_sentences_split_on_chinese_and_english_punctuation():
    text = "梯度消失很常见。  它为什么发生？因为连乘！Use ReLU. Version 2.5 works\n下一行"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["梯度消失很常见。", "它为什么发生？", "因为连乘！", "Use ReLU.",
                                             "Version 2.5 works", "下一行"]
    assert "".join(sentence_pieces(text)) == text


def test_evidence_picks_the_answering_sentence_not_the_heading():
    hits = [hit("梯度爆炸和梯度消失哪个更常见？一般来说，梯度爆炸不如梯度消失出现的机会多。梯度爆炸可以用梯度裁剪缓解。",
                heading="梯度爆炸和梯度消失哪个更常见？", start=100),
            hit("卷积层提取局部特征。池化层降低分辨率。", heading="CNN 的结构")]
    ev = select_evidence("梯度爆炸跟梯度消失比，哪个更常见？", hits, FakeEmbedder(), max_sentences=1, neighbours=0)
    assert [e.text for e in ev] == ["一般来说，梯度爆炸不如梯度消失出现的机会多。"]
    e = ev[0]
    assert e.n == 1 and e.source == "notes.md"
    assert hits[0].chunk.text[e.start - 100:e.end - 100] == e.text  # offsets point into the source file


def test_a_sentence_that_announces_a_list_brings_the_next_one():
    hits = [hit("防止过拟合的方法如下：\n数据增强、正则化、dropout。\n其他内容。", heading="如何防止过拟合")]
    ev = select_evidence("怎么防止过拟合", hits, None, max_sentences=1, neighbours=0)
    assert len(ev) == 2 and ev[1].text.startswith("数据增强")


@pytest.mark.parametrize("claim,evidence,conflict", [
    ("卷积操作本身不是线性的 [1]。", "卷积操作是线性的。", True),
    ("梯度爆炸比梯度消失更常见 [1]。", "一般来说，梯度爆炸不如梯度消失出现的机会多。", True),
    ("卷积操作是线性的 [1]。", "卷积操作是线性的。", False),
    ("测试时不需要 dropout。", "测试时不使用 dropout。", False),
    ("Dropout is not used at test time.", "测试时不使用 dropout。", False),
    ("不同的激活函数效果不同。", "激活函数效果不同。", False),  # 不同 is not a negation
])
def test_polarity(claim, evidence, conflict):
    assert polarity_conflict(claim, evidence) is conflict


def _ev(text, n=1):
    return Evidence(n, text, "notes.md", 1, 0, len(text), 1.0)


def test_contradiction_is_replaced_by_the_evidence_and_unsupported_removed_without_a_model():
    ev = [_ev("一般来说，梯度爆炸不如梯度消失出现的机会多。")]
    v = verify_answer("梯度爆炸比梯度消失出现的机会更多 [1]。另外，火星上也有梯度 [1]。", ev)
    assert "梯度爆炸比梯度消失" not in v.text and "火星" not in v.text
    assert "资料原文：“一般来说，梯度爆炸不如梯度消失出现的机会多。” [1]" in v.text
    assert v.replaced == 1 and v.removed == 1
    assert "removed 1 unsupported sentence" in v.note() and "replaced 1" in v.note()


def test_supported_sentence_is_kept_and_the_model_settles_unsure_ones():
    ev = [_ev("测试时不使用 dropout，只在训练时随机丢弃神经元。")]
    assert verify_answer("测试时不使用 dropout [1]。", ev).text == "测试时不使用 dropout [1]。"
    calls = []

    def yes(messages, prefix, conts):
        calls.append(messages[-1]["content"])
        return [(-0.1, 1), (-3.0, 1)]

    v = verify_answer("Inference mode switches it off [1].", ev, scorer=yes)
    assert v.text == "Inference mode switches it off [1]." and v.verdicts[0].status == "supported-by-model" and calls
    no = lambda m, p, c: [(-3.0, 1), (-0.1, 1)]  # noqa: E731
    assert verify_answer("Inference mode switches it off [1].", ev, scorer=no).text == ""
    # A claim about the same words with the opposite sense is replaced by the evidence, whatever the model says.
    v = verify_answer("测试时使用 dropout [1]。", ev, scorer=no)
    assert v.replaced == 1 and v.text.startswith("资料原文：“测试时不使用 dropout")


def test_a_flip_against_one_sentence_is_not_a_contradiction_when_another_agrees():
    ev = [_ev("但是要注意dropout只在训练的时候用。"), _ev("Dropout这种变化只会影响训练过程,而不会影响测试过程。", 2)]
    v = verify_answer("测试的时候不需要使用 dropout，它只影响训练过程。", ev)
    assert v.replaced == 0 and v.text.startswith("测试的时候不需要使用 dropout")
    alone = [_ev("测试的时候不用 dropout，只在训练时用。")]
    assert verify_answer("测试的时候要用 dropout [1]。", alone).replaced == 1


def test_streaming_holds_back_from_the_first_suspect_sentence():
    ev = [_ev("卷积操作是线性的。")]
    text = "卷积操作是线性的 [1]。卷积操作不是线性的 [1]。后面"
    upto, held = releasable(text, 0, ev)
    assert text[:upto] == "卷积操作是线性的 [1]。" and held


def test_ask_streams_evidence_first_and_never_shows_a_contradiction(settings):
    bad = "测试时要用 Dropout，Dropout 在测试时必须打开 [1]。"
    a = Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator(bad))
    events = list(a.ask("测试的时候要用 Dropout 吗?"))
    assert events[0].kind == "retrieved" and events[0].evidence
    assert any("Dropout" in e.text for e in events[0].evidence)
    shown = "".join(e.text for e in events if e.kind == "token")
    ans = events[-1].answer
    assert "必须打开" not in shown and "必须打开" not in ans.text
    assert ans.text.startswith("依据[") and ans.verified.verdicts
    assert ans.to_dict()["evidence"] and ans.timings["evidence_shown"] < ans.timings["total"]


def test_passages_style_still_available(settings):
    from dataclasses import replace

    gen = FakeGenerator()
    a = Assistant(replace(settings, answer_style="passages"), embedder=FakeEmbedder(), generator=gen)
    ans = a.answer("测试的时候要用 Dropout 吗?")
    assert not ans.abstained and gen.prefixes == [""] and ans.verified is None


def test_calibration_fit_cross_validates_and_is_tied_to_its_model(tmp_path):
    rng = random.Random(1)
    X, y = [], []
    for _ in range(120):
        covered = rng.random() < 0.6
        X.append([rng.gauss(0.6 if covered else 0.3, 0.1), rng.gauss(0.9, 0.02), rng.random(),
                  rng.gauss(2.0 if covered else -1.0, 0.7), float(not covered and rng.random() < 0.3)])
        y.append(covered)
    cal = fit("m1", X, y)
    assert cal.cv["f1"] > 0.85 and cal.cv["folds"] == 5
    assert cal.probability([0.6, 0.9, 0.5, 2.0, 0]) > 0.5 > cal.probability([0.3, 0.9, 0.5, -1.5, 0])
    path = tmp_path / "abstain.json"
    cal.save(path)
    assert isinstance(load_calibration("m1", path), Calibration)
    assert load_calibration("another-model", path) is None
    path.write_text("{not json")
    assert load_calibration("m1", path) is None


def test_unseen_terms_counts_the_latin_terms_of_a_chinese_question_that_no_note_contains(assistant):
    from rag.abstain import unseen_terms

    leg = assistant.index().bm25.legs["jieba"]
    assert unseen_terms("测试的时候要用 Dropout 吗?", leg) == 0  # the notes have Dropout
    assert unseen_terms("训练时 gradient checkpointing 是怎么省显存的?", leg) >= 1
    assert unseen_terms("What is gradient checkpointing?", leg) == 0  # English questions: any word may be absent


def test_a_calibration_fitted_on_other_signals_is_refused(tmp_path):
    path = tmp_path / "abstain.json"
    Calibration("m1", [0, 0, 0, 5.0], 0.0, [0] * 4, [1] * 4, 0.5, {}).save(path)  # the four-signal fit
    assert load_calibration("m1", path) is None


def test_calibrated_judge_declines_and_keeps_the_closest_passages(settings, monkeypatch, tmp_path):
    path = tmp_path / "abstain.json"
    # A calibration that trusts only the judge: the fake scorer's "能" is unlikely for this question.
    Calibration("fake", [0, 0, 0, 5.0, 0], 0.0, [0] * 5, [1] * 5, 0.5, {}).save(path)
    monkeypatch.setattr("rag.assistant.load_calibration", lambda model: load_calibration(model, path))
    gen = FakeGenerator()
    gen.score = lambda messages, prefix, conts: [(-5.0, 1), (-0.1, 1)]
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    ans = a.answer("测试的时候要用 Dropout 吗?")
    assert ans.abstained and ans.p_covered < 0.5 and ans.hits and gen.prompts == []
    assert json.loads(json.dumps(ans.to_dict()))["p_covered"] < 0.5


def test_mcq_judge_turns_negated_stems_positive_and_takes_the_worst_option():
    from rag.evaluation.mcq_judge import decide, positive_form

    assert positive_form("下列哪个说法是不正确的?") == ("下列哪个说法是正确的?", True)
    assert positive_form("以下哪种做法不可取") == ("以下哪种做法可取", True)
    assert positive_form("Which statement is NOT true?") == ("Which statement is true?", True)
    assert positive_form("哪个激活函数引入了非线性?") == ("哪个激活函数引入了非线性?", False)
    assert decide([0.5, 2.0, -1.0], negated=False, multi=False) == [1]
    assert decide([0.5, 2.0, -1.0], negated=True, multi=False) == [2]
    assert decide([0.5, 2.0, -1.0], negated=False, multi=True) == [0, 1]
    assert decide([-0.5, -2.0], negated=False, multi=True) == [0]


def test_mcq_judge_scores_each_option_alone_so_order_cannot_matter(settings):
    from rag.evaluation.mcq_judge import run

    a = Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator())
    items = [{"id": 1, "question": "测试时要用 Dropout 吗?", "options": ["不需要，测试时关闭 Dropout", "红烧肉", "火星"],
              "answer": [0]}]
    r = run(a, items)
    assert r["items"][0]["rag"]["pred"] == [0] and r["rag"] == r["rag_shuffled"] == 1.0


def test_names_no_note_mentions_decline_before_the_model_reads(settings):
    from rag.abstain import unknown_names

    gen = FakeGenerator()
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    leg = a.index().bm25.legs["jieba"]
    assert unknown_names("LoRA 和 Dropout 有什么关系？", leg) == ["LoRA"]
    assert unknown_names("Does Dropout help at test time? What about BN?", leg) == []
    ans = a.answer("LoRA 微调时测试阶段要用 Dropout 吗？")
    assert ans.abstained and ans.unknown == ["LoRA"] and "LoRA" in ans.text
    # the model read nothing but the question (mostly Latin letters: translated for the search)
    assert all(p[0]["content"] == prompts.TRANSLATE_SYSTEM for p in gen.prompts)


@pytest.mark.parametrize("question, expected", [
    ("PyTorch 多 GPU 训练时梯度是怎么同步的，求平均还是求和", ("平均", "求和")),
    ("语言模型的困惑度 perplexity 是越低越好还是越高越好？", ("越低", "越高")),
    ("batch size 设大一点好还是小一点好，对训练有什么影响", ("大一", "小一")),
    ("下采样的作用是什么，用池化还是用步长为 2 的卷积", ("池化", "用步长")),
    ("Pytorch 多卡并行时，通信梯度是平均梯度,还是最大梯度,还是梯度总和?", None),  # three-way: not handled
    ("还是不懂", None),
])
def test_either_or_finds_the_two_alternatives(question, expected):
    from rag.verify import either_or

    assert either_or(question) == expected


def test_picking_the_alternative_the_evidence_does_not_name_is_a_contradiction():
    alts = ("平均", "求和")
    ev = [_ev("多卡训练时，各卡的梯度在同步时会求和，再除以卡数。")]
    v = verify_answer("所以，梯度同步时是求平均 [1]。", ev, alternatives=alts)
    assert v.replaced == 1 and "求平均" not in v.text and "资料原文" in v.text
    assert verify_answer("所以，梯度同步时是求和 [1]。", ev, alternatives=alts).replaced == 0
    from rag.verify import picks_the_other

    # evidence that names the other one only to deny it is not this rule's call (negation parity decides)
    assert not picks_the_other("梯度同步时是求平均", "梯度同步时不是简单求和。", alts)
    upto, held = releasable("所以，梯度同步时是求平均 [1]。然后", 0, ev, alternatives=alts)
    assert held and upto == 0  # never on screen, not even while streaming


def test_the_quote_prefers_the_top_passage_on_near_ties_and_keeps_an_announcement_with_its_content():
    from rag.evidence import quoted

    near_tie = [Evidence(2, "另一段里的句子。", "b.md", 1, 0, 8, 1.05), Evidence(1, "第一段里的句子。", "a.md", 1, 0, 8, 1.0)]
    assert quoted(near_tie).n == 1
    clear_win = [Evidence(2, "另一段里的句子。", "b.md", 1, 0, 8, 1.5), Evidence(1, "第一段里的句子。", "a.md", 1, 0, 8, 1.0)]
    assert quoted(clear_win).n == 2
    lean = [Evidence(1, "原因如下：", "a.md", 3, 10, 15, 2.0), Evidence(1, "学习率太大会震荡。", "a.md", 4, 16, 25, 2.0)]
    q = quoted(lean)
    assert q.text == "原因如下：学习率太大会震荡。" and (q.start, q.end) == (10, 25)


def test_a_close_second_sentence_of_the_same_passage_joins_the_quote_in_note_order():
    from rag import prompts
    from rag.evidence import quotes

    text = "BN 放在哪里？它放在线性层和激活之间。这样激活的输入分布稳定。别的话题。"
    first, second, third = (text.index(s) for s in ("它放在", "这样激活", "别的"))
    ev = [Evidence(1, "它放在线性层和激活之间。", "a.md", 1, first, second, 1.0),
          Evidence(1, "这样激活的输入分布稳定。", "a.md", 1, second, third, 0.9),
          Evidence(2, "另一段。", "b.md", 1, 0, 4, 0.95)]
    said = quotes(ev)
    assert [e.text for e in said] == ["它放在线性层和激活之间。", "这样激活的输入分布稳定。"]
    # adjacent in the note: the note's own joint, one quote, one citation
    chunk = Chunk("c1", "a.md", "BN 放在哪里？", text, 0, len(text), 1, "0" * 64)
    assert prompts.quote_prefix(said, chunk) == "依据[1]：“它放在线性层和激活之间。这样激活的输入分布稳定。”\n所以，"
    # not adjacent: an ellipsis marks the gap
    apart = [Evidence(1, "它放在线性层和激活之间。", "a.md", 1, first, second, 1.0),
             Evidence(1, "别的话题。", "a.md", 1, third, len(text), 0.8)]
    assert prompts.quote_prefix(quotes(apart), chunk).startswith("依据[1]：“它放在线性层和激活之间。……别的话题。”")
    # a distant second (below QUOTE_SECOND of the best) or another passage's sentence is not quoted
    weak = [ev[0], Evidence(1, "这样激活的输入分布稳定。", "a.md", 1, second, third, 0.5), ev[2]]
    assert [e.text for e in quotes(weak)] == ["它放在线性层和激活之间。"]


def test_an_invented_decimal_constant_is_removed_even_when_the_model_would_vouch_for_it():
    from rag.verify import invented_constants, verify_answer

    ev = [Evidence(1, "对应的激活函数是SELU,主要思想是使样本分布自动归一化到零均值、单位方差的分布。", "a.md", 1, 0, 40, 1.0)]
    claim = "SELU 的 λ 和 α 两个常数大约是 1.0507 和 1.6180 [1]。"
    assert invented_constants(claim, ev) == ["1.0507", "1.6180"]
    v = verify_answer(claim, ev, scorer=lambda *a: [(0.0, 1), (-9.0, 1)])  # a judge that says "是" to anything
    assert v.text == "" and v.removed == 1
    # a constant the question or the evidence gives stays
    assert invented_constants("学习率取 0.01 时 [1]。", ev, question="学习率 0.01 合适吗") == []
    assert invented_constants("输出尺寸为 1918 [1]。", ev) == []  # integers may be worked out


def test_a_claim_built_from_words_the_reader_was_not_given_is_removed_whatever_the_model_says():
    from rag.verify import novel, verify_answer

    ev = [Evidence(1, "这个条件是多层神经网络的基础,保证多层网络不退化成单层线性网络。", "a.md", 1, 0, 40, 1.0)]
    q = "网络一深，靠前那几层的梯度就几乎没了，有什么简单的办法缓解？"
    invented = "梯度裁剪通过限制梯度的大小来防止梯度消失或爆炸，从而提高模型的训练效果。"
    assert novel(invented, ev, q)
    v = verify_answer(invented, ev, scorer=lambda *a: [(0.0, 1), (-9.0, 1)], question=q)  # a judge saying "是"
    assert v.text == "" and v.removed == 1
    # restating the question with the evidence's words is not novel; an English claim is not judged this way
    assert not novel("网络一深，多层网络会退化成单层线性网络吗 [1]。", ev, q)
    assert not novel("Deep networks need non-linearity, or they collapse into one linear layer [1].", ev, q)


def test_the_options_of_an_exam_question_in_the_notes_are_not_evidence():
    from rag.evidence import option_spans

    note = ("26. [优化器] 下列哪些项所描述的相关技术是错误的?\n- AdaGrad使用的是二阶差分\n"
            "- momentum、adgrad用的是一阶导\n正确答案是:A。AdaGrad 用的是一阶导数信息。\n"
            "3. 有哪些常用的优化器？\n- SGD 每次只用一个小批量的梯度\n")
    spans = [note[s:e].strip() for s, e in option_spans(note)]
    assert spans == ["- AdaGrad使用的是二阶差分", "- momentum、adgrad用的是一阶导"]  # a question heading's bullets stay
    hit = Hit(Chunk("c1", "mcq.md", "26. [优化器]", note, 0, len(note), 1, "0" * 64), 1.0)
    ev = select_evidence("AdaGrad 用的是一阶导还是二阶导？", [hit])
    assert ev and not any("二阶差分" in e.text for e in ev)
    # A plain numbered question whose bullets are followed by the explanation is an exam item too; one whose
    # bullets run into the next question is a note's answer.
    note = ("14. [BN] 批规范化的好处都有啥?\n- 让每一层的输入的范围都大致固定\n- 它将权重的归一化平均值和标准差\n"
            "是对数据进行归一化,而不是权重\n3. 有哪些常用的优化器？\n- SGD 每次只用一个小批量的梯度\n- Adam\n4. 学习率怎么选？\n")
    spans = [note[s:e].strip() for s, e in option_spans(note)]
    assert spans == ["- 让每一层的输入的范围都大致固定", "- 它将权重的归一化平均值和标准差"]


def test_a_conclusion_resting_on_another_passage_is_quoted_from_that_passage():
    quoted = [_ev("Dropout 只在训练过程中随机丢弃神经元。", n=1)]
    ev = quoted + [_ev("学习率过大时，损失会震荡甚至发散。", n=2)]
    v = verify_answer("学习率过大时损失会震荡甚至发散 [2]。", ev)
    assert requote(v, quoted, ev) is ev[1] and v.requoted == (1, 2) and "quoted [2]" in v.note()
    # A conclusion citing the quoted passage, or one the quote supports as well, keeps the quote.
    v = verify_answer("Dropout 只在训练过程中随机丢弃神经元 [1]。", ev)
    assert requote(v, quoted, ev) is None and v.requoted is None
    v = verify_answer("学习率过大时损失会震荡甚至发散 [2]。", ev)
    assert requote(v, [ev[1], quoted[0]], ev) is None


def test_ask_quotes_the_passage_its_conclusion_cites(settings):
    a = Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator())
    q = "学习率太大会怎样？测试的时候要用 Dropout 吗?"
    first = a.answer(q)
    n = int(first.text[len("依据["):first.text.index("]")])
    other = next(e for e in first.evidence if e.n != n and len(e.text) > 12)  # the question spans two notes
    claim = other.text.strip().rstrip("。；")  # a verbatim copy of another passage's sentence
    ans = Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator(f"{claim} [{other.n}]。")).answer(q)
    assert ans.text.startswith(f"依据[{other.n}]：“{other.text.strip()}”") and ans.verified.requoted == (n, other.n)
    assert [k for k, _ in ans.sources] == [other.n]
