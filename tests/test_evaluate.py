"""`rag eval`: scoring rules, the MCQ parser, and the harness end to end on fakes."""

import importlib.util
import json
import math
import random
from types import SimpleNamespace

import pytest

from conftest import ROOT
from rag import cli
from rag.errors import RagError
from rag.evaluation import data, metrics, report, suites
from rag.evaluation import mcq as mcq_suite
from rag.evaluation.cache import ScoreCache
from rag.fakes import FakeEmbedder, FakeGenerator

# ---------------------------------------------------------------- decision rule and accuracy


def test_gap_rule_keeps_a_clear_winner_alone():
    assert metrics.decide([-1.0, -5.0, -6.0, -9.0]) == [0]


def test_gap_rule_keeps_options_within_ln2_of_the_best():
    # shares 0.4, 0.4, 0.15, 0.05: two equally likely options are both chosen
    scores = [math.log(p) for p in (0.4, 0.4, 0.15, 0.05)]
    assert metrics.decide(scores) == [0, 1]
    # exactly half the best share is still in; just under half is out
    assert metrics.decide([0.0, math.log(0.5)]) == [0, 1]
    assert metrics.decide([0.0, math.log(0.49)]) == [0]


def test_gap_rule_ratio_one_is_top1_and_empty_input():
    assert metrics.decide([-2.0, -2.0, -3.0], ratio=1.0) == [0]
    assert metrics.decide([]) == []


def test_exact_match_is_set_equality_and_jaccard_gives_partial_credit():
    assert metrics.exact_match([3, 0, 1], [0, 1, 3])
    assert not metrics.exact_match([0, 1], [0, 1, 3])
    assert metrics.jaccard([0, 1], [0, 1, 3]) == pytest.approx(2 / 3)
    assert metrics.jaccard([], []) == 1.0


@pytest.mark.parametrize("n,m,p", [(4, 1, 0.25), (2, 1, 0.5), (4, 3, 0.25), (4, 2, 1 / 6), (5, 5, 1.0)])
def test_chance_of_a_random_answer_set_of_the_right_size(n, m, p):
    assert metrics.chance_exact(n, m) == pytest.approx(p)


def test_baseline_ties_are_broken_at_random_in_expectation():
    assert metrics.tie_break_expectation([0.5, 0.5, 0.1], [1]) == 0.5
    assert metrics.tie_break_expectation([0.9, 0.5], [1]) == 0.0
    assert metrics.tie_break_expectation([0.9, 0.9], [0, 1]) == 0.0  # a single pick never matches a set of two


# ---------------------------------------------------------------- retrieval metrics


def test_hit_at_k_and_mrr():
    ranks = [1, 3, None, 6]
    assert metrics.hit_at(ranks, 1) == 0.25
    assert metrics.hit_at(ranks, 5) == 0.5
    assert metrics.hit_at(ranks, 10) == 0.75
    assert metrics.mrr_at(ranks, 5) == pytest.approx((1 + 1 / 3) / 4)
    assert metrics.hit_at([], 5) == 0.0


def test_abstain_precision_recall_f1():
    r = metrics.prf([True, True, False, False, True], [True, False, True, False, True])
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert metrics.prf([False, False], [True, False])["f1"] == 0.0


def test_threshold_sweep_finds_the_separating_coverage():
    # out-of-corpus questions have low coverage and low cosine; in-corpus ones have high coverage
    rows = [(0.1, 0.5, True), (0.2, 0.6, True), (0.6, 0.5, False), (0.9, 0.7, False), (0.45, 0.95, False)]
    sweep = metrics.sweep_thresholds(rows, [0.1, 0.3, 0.5, metrics.OFF], [0.9, metrics.OFF])
    best = metrics.best_setting(sweep)
    assert best["f1"] == 1.0 and best["coverage"] == 0.3
    cov_only = metrics.best_setting([s for s in sweep if s["dense"] == metrics.OFF])
    assert cov_only["coverage"] == 0.3 and cov_only["f1"] == 1.0
    assert metrics.abstains(0.2, 0.95, 0.3, 0.9) is False  # either signal vouches for coverage


def test_gold_matching_on_text_or_question_heading():
    chunk = SimpleNamespace(source="ali.txt", heading="CNN问题 · 思想", text="改变全连接为 局部连接，共享权重")
    assert data.is_gold(chunk, [("ali.txt", None, "改变全连接为局部连接")])  # whitespace-insensitive
    assert data.is_gold(chunk, [("ali.txt", "思想", "not here")])
    assert not data.is_gold(chunk, [("other.txt", "思想", "改变全连接为局部连接")])
    assert not data.heading_matches("GAN · GAN的思想", "思想")
    assert data.heading_matches("[BN] BatchNorm 层对于 input batch", "BatchNorm 层对于 input batch")
    assert data.heading_matches("W 什么是多任务学习？应该在什么时候使用？", "什么是多任务学习？应该在什么时候使用？")
    assert data.first_gold_rank([SimpleNamespace(source="x", heading="", text=""), chunk],
                              [("ali.txt", "思想", None)]) == 2


def test_keyword_recall_is_case_and_width_insensitive():
    assert metrics.keyword_recall("使用ＬＳＨ或 annoy 建索引", ["LSH", "Annoy", "向量"]) == pytest.approx(2 / 3)
    assert metrics.keyword_recall("x", []) is None


# ---------------------------------------------------------------- MCQ helpers


def test_shuffle_pins_options_that_refer_to_others():
    opts = ["卷积神经网络", "循环神经网络", "全连接神经网络", "选项A和B"]
    perm, gold = mcq_suite.shuffle_options(opts, [3], random.Random(1))
    assert perm == [0, 1, 2, 3] and gold == [3]  # A, B and D are pinned, C alone cannot move
    opts = ["学习率太低", "正则参数太高", "陷入局部最小值", "以上都有可能"]
    for seed in range(20):
        perm, gold = mcq_suite.shuffle_options(opts, [0, 2], random.Random(seed))
        assert perm[3] == 3 and sorted(perm) == [0, 1, 2, 3]
        assert sorted(perm[i] for i in gold) == [0, 2]  # the same options are still the answer


def test_shuffle_is_deterministic_for_a_seed():
    opts = ["a", "b", "c", "d", "e"]
    p1, _ = mcq_suite.shuffle_options(opts, [0], random.Random("s:1"))
    p2, _ = mcq_suite.shuffle_options(opts, [0], random.Random("s:1"))
    assert p1 == p2 and sorted(p1) == list(range(5))


def test_lexical_baseline_ignores_the_options_own_occurrence():
    q = "下面哪项操作能实现跟Dropout类似的效果?"
    opts = ["Boosting", "Bagging"]
    passage = f"{q}\n- Boosting\n- Bagging\n解释: Bagging 集成多个模型"
    scores = mcq_suite.lexical_option_scores(opts, q, [passage])
    assert scores[1] > scores[0]


# ---------------------------------------------------------------- the MCQ parser (eval/build_mcq.py)


@pytest.fixture(scope="module")
def parsed():
    path = ROOT / "eval" / "build_mcq.py"
    src = ROOT / "corpus" / "dl_mcq_36.txt"
    if not path.exists() or not src.exists():
        pytest.skip("eval/build_mcq.py or the MCQ source file is missing")
    spec = importlib.util.spec_from_file_location("build_mcq", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {r["id"]: r for r in mod.build(str(src))}


def test_parser_finds_36_items_and_matches_the_committed_set(parsed):
    assert sorted(parsed) == list(range(1, 37))
    committed = {r["id"]: r for r in map(json.loads, (ROOT / "eval" / "mcq.jsonl").read_text("utf-8").splitlines())}
    for i, r in parsed.items():
        assert (r["question"], r["options"], r["answer"]) == (committed[i]["question"], committed[i]["options"],
                                                              committed[i]["answer"]), i


def test_parser_q10_options_end_at_the_explanation_line(parsed):
    q = parsed[10]
    assert q["options"] == ["增加更多的样本", "Dropout", "增大模型复杂度,提高在训练集上的效果", "增加参数惩罚"]
    assert q["explanation"].startswith("防止模型过拟合") and q["answer"] == [0, 1, 3]


def test_parser_q11_colon_bullets_are_explanation(parsed):
    q = parsed[11]
    assert q["options"] == ["计算简单", "非线性", "具有饱和区", "几乎处处可微"]
    assert q["explanation"].startswith("- :即导数不是常数") and q["answer"] == [0, 1, 3]


def test_parser_q26_keeps_three_options(parsed):
    q = parsed[26]
    assert len(q["options"]) == 3 and q["options"][2] == "AdaGrad使用的是二阶差分"
    assert "牛顿法" in q["explanation"] and q["answer"] == [2]


@pytest.mark.parametrize("qid", [6, 30, 35])
def test_parser_unanswerable_items_are_excluded(parsed, qid):
    q = parsed[qid]
    assert q["excluded"] and q["answer"] == [] and q["exclude_reason"]
    if qid == 6:
        assert q["options"] == ["", "", "", ""]  # image options lost
    if qid == 30:
        assert q["options"] == [] and q["explanation"].startswith("B这是鞍点")
    if qid == 35:
        assert q["question"].endswith("卷积核如下:")  # the kernels and the real question are missing


# ---------------------------------------------------------------- end to end on fakes


@pytest.fixture
def eval_data(tmp_path, monkeypatch):
    d = tmp_path / "evaldata"
    d.mkdir()
    mcq = [
        {"id": 1, "category": ["Dropout"], "question": "测试的时候要用 Dropout 吗?", "options": ["不需要，测试时关闭 Dropout", "必须开启"],
         "answer": [0], "explanation": "Dropout 只在训练过程中随机丢弃神经元，测试时关闭 Dropout", "derived_from": "explanation",
         "excluded": False},
        {"id": 2, "category": ["lr"], "question": "学习率太大会怎样?", "options": ["损失会震荡甚至发散", "收敛更快更稳", "以上都对"],
         "answer": [0], "explanation": "", "derived_from": "domain knowledge", "excluded": False},
        {"id": 3, "category": ["x"], "question": "图中是什么?", "options": ["", ""], "answer": [], "explanation": "",
         "derived_from": None, "excluded": True, "exclude_reason": "options lost"},
    ]
    retrieval = [
        {"id": "h1", "question": "测试的时候要用 Dropout 吗?", "kind": "heading", "source": "notes.md",
         "gold_heading": "测试的时候要用 Dropout 吗?", "gold_contains": "测试时关闭 Dropout", "lang": "mixed"},
        {"id": "p1", "question": "梯度爆炸怎么缓解", "kind": "paraphrase", "source": "grad.txt",
         "gold_heading": "梯度爆炸", "gold_contains": "梯度裁剪", "lang": "zh"},
        {"id": "o1", "question": "红烧肉怎么做才好吃？", "kind": "out_of_corpus", "source": None,
         "gold_heading": None, "gold_contains": None, "lang": "zh"},
    ]
    answers = [
        {"id": "a1", "question": "测试的时候要用 Dropout 吗?", "source": "notes.md", "gold_contains": "测试时关闭 Dropout",
         "gold_heading": "测试的时候要用 Dropout 吗?", "reference_keywords": ["Dropout", "测试"], "in_corpus": True},
        {"id": "a2", "question": "红烧肉怎么做才好吃？", "source": None, "gold_contains": None, "gold_heading": None,
         "reference_keywords": [], "in_corpus": False},
    ]
    for name, rows in (("mcq", mcq), ("retrieval", retrieval), ("answers", answers)):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    monkeypatch.setenv("RAG_EVAL_DATA", str(d))
    monkeypatch.delenv("RAG_INDEX_DIR", raising=False)
    return d


class PassageScorer(FakeGenerator):
    """Scores an option by its bigram overlap with the passages only (FakeGenerator also sees the
    option list in the prompt, so every option would look supported)."""

    def score(self, messages, prefix, continuations):
        context = messages[-1]["content"].split("题目：")[0]
        return super().score([{"role": "user", "content": context}], prefix, continuations)


@pytest.fixture
def assistant(settings):
    from rag.assistant import Assistant

    return Assistant(settings, embedder=FakeEmbedder(), generator=PassageScorer())


def _eval(assistant, tmp_path, *argv) -> int:
    """`rag eval …` through the real CLI, on the given assistant, reports under tmp_path/results."""
    return cli.main(["eval", *argv, "--out", str(tmp_path / "results")], assistant=assistant)


def test_eval_all_end_to_end_with_fakes(assistant, eval_data, tmp_path, capsys):
    assert _eval(assistant, tmp_path) == 0
    out = tmp_path / "results"
    for f in ("mcq.md", "mcq.json", "retrieval.md", "retrieval.json", "answers.md", "answers.json", "README.md",
              "mcq_by_category.png", "retrieval_hit_at_k.png"):
        assert (out / f).exists(), f
    mcq = json.loads((out / "mcq.json").read_text("utf-8"))
    assert mcq["meta"]["n_items"] == 2 and mcq["meta"]["excluded"] == 1
    assert mcq["headline"]["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # the fake scores an option's text by its overlap with the evidence (letters and 对/错 mean nothing to it)
    assert mcq["variants"]["rag/original/text"]["exact"] == 1.0
    assert mcq["variants"]["rag/original/text-lift"]["exact"] == 1.0
    assert len(set(mcq["items"][0]["signals"]["closed"]["text"])) == 1  # no evidence: nothing to overlap with
    assert 0.0 <= mcq["headline"]["rag_original"] <= 1.0
    item = mcq["items"][1]
    assert item["perm"][2] == 2  # "以上都对" stays last
    assert set(item["signals"]) == {"rag", "closed"}
    assert len(item["signals"]["rag"]["letter"]["rotations"]) == 2  # two free options, "以上都对" pinned
    first = mcq["items"][0]
    assert "测试时关闭 Dropout" in first["evidence"] and first["question"] not in first["evidence"]
    ret = json.loads((out / "retrieval.json").read_text("utf-8"))
    assert ret["table"]["hybrid/heading"]["hit@1"] == 1.0
    assert ret["table"]["bm25/paraphrase"]["hit@5"] == 1.0
    assert ret["abstain"]["best"]["f1"] == 1.0
    assert not ret["meta"]["unreachable"]
    ans = json.loads((out / "answers.json").read_text("utf-8"))
    assert ans["abstain_gate"]["tp"] == 1 and ans["citation_precision"] == 1.0
    assert ans["keyword_recall"] == 1.0
    printed = capsys.readouterr().out
    assert "mcq:" in printed and "retrieval:" in printed and "answers:" in printed
    assert not (assistant.settings.index_dir / "CURRENT").exists()  # the user's index is not touched


def test_eval_retrieval_set_reports_another_set_under_its_own_name(assistant, eval_data, tmp_path):
    """`rag eval retrieval --set`: a held-out or blind set, without heading questions, next to the tuning report."""
    rows = [json.loads(line) for line in (eval_data / "retrieval.jsonl").read_text("utf-8").splitlines()]
    held = tmp_path / "retrieval_heldout.jsonl"
    held.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows if r["kind"] != "heading") + "\n", "utf-8")
    assert _eval(assistant, tmp_path, "retrieval", "--set", str(held)) == 0
    out = tmp_path / "results"
    assert not (out / "retrieval.json").exists() and not (out / "retrieval_hit_at_k.png").exists()
    ret = json.loads((out / "retrieval_heldout.json").read_text("utf-8"))
    assert ret["meta"]["set"] == "retrieval_heldout.jsonl" and ret["meta"]["kinds"] == {"paraphrase": 1, "out_of_corpus": 1}
    assert "hybrid/heading" not in ret["table"] and ret["table"]["hybrid/paraphrase"]["n"] == 1
    assert (out / "retrieval_heldout_hit_at_k.png").exists()
    assert (out / "retrieval_heldout.md").read_text("utf-8").startswith("# Retrieval on retrieval_heldout.jsonl")


def test_mcq_scores_come_from_the_cache_on_a_second_run(assistant, eval_data, tmp_path):
    _eval(assistant, tmp_path, "mcq")
    gen = assistant.generator
    calls = []
    orig = gen.score
    gen.score = lambda *a, **k: calls.append(1) or orig(*a, **k)
    _eval(assistant, tmp_path, "mcq")
    assert calls == []
    _eval(assistant, tmp_path, "mcq", "--no-cache")
    assert calls


def test_missing_eval_set_is_a_typed_error(assistant, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_EVAL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(RagError, match="eval set not found"):
        suites.run("retrieval", assistant)
    assert _eval(assistant, tmp_path, "retrieval") != 0  # the CLI turns it into one line
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: eval set not found")


def test_answer_prefix_whitespace_moves_into_the_continuations():
    assert mcq_suite.split_prefix("正确答案是: ") == ("正确答案是:", " ")
    assert mcq_suite.split_prefix("答案:") == ("答案:", "")


# ---------------------------------------------------------------- the evaluation package's parts


def test_score_cache_reuses_a_score_only_for_the_same_model_and_prompt(tmp_path):
    path = tmp_path / "scores.jsonl"
    a, b = FakeGenerator(), FakeGenerator()
    b.model_id = "another-model"
    msgs = [{"role": "user", "content": "测试时要用 Dropout 吗?"}]
    first = ScoreCache(path).score(a, msgs, "答案:", ["不需要", "需要"])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"k": "torn')  # an interrupted run's last line
    again = ScoreCache(path)
    assert again.score(a, msgs, "答案:", ["不需要", "需要"]) == first
    assert again.stats() == {"from_disk": 1, "scored": 0, "repeated": 0}
    again.score(b, msgs, "答案:", ["不需要", "需要"])  # another model: scored anew
    again.score(a, [{"role": "user", "content": "另一个问题"}], "答案:", ["不需要", "需要"])  # another prompt
    again.score(a, msgs, "答案:", ["不需要", "需要"])
    assert again.stats() == {"from_disk": 2, "scored": 2, "repeated": 0}
    again.score(b, msgs, "答案:", ["不需要", "需要"])
    assert again.stats()["repeated"] == 1


def test_golds_come_from_the_item_and_both_kinds_of_alternatives():
    item = {"source": "a.txt", "gold_heading": "h", "gold_contains": "x",
            "alt_golds": [{"source": "b.txt", "gold_contains": "y"}], "alt_sources": [{"source": "c.md"}, {"gold_contains": "z"}]}
    assert data.golds_of(item) == [("a.txt", "h", "x"), ("c.md", None, None), ("b.txt", None, "y")]
    assert data.golds_of({"source": None, "question": "红烧肉"}) == []
    assert data.covered_of({"in_corpus": False}) is False and data.covered_of({"kind": "paraphrase"}) is True
    assert data.covered_of({"kind": "out_of_corpus", "covered": True}) is True


def test_rubric_normalization_also_drops_quotes():
    assert data.normalize("“ReLU” 的 **导数**") == "“relu”的导数"
    assert data.normalize("“ReLU” 的 **导数**", quotes=True) == "relu的导数"


def test_spread_subset_takes_every_nth_then_the_first_n():
    items = [{"id": i} for i in range(10)]
    assert [i["id"] for i in data.spread(items, every=3)] == [0, 3, 6, 9]
    assert [i["id"] for i in data.spread(items, every=3, limit=2)] == [0, 3]
    assert data.spread(items) == items


def test_quantile_helpers_and_rate():
    assert metrics.rate([True, False, True, True]) == 0.75 and metrics.rate([]) is None
    assert metrics.quantile([3.0, None, 1.0, 2.0, 4.0], 0.5) == 3.0 and metrics.quantile([None], 0.5) is None
    q = metrics.quantiles([float(x) for x in range(11)])
    assert q == {"min": 0.0, "p10": 1.0, "p50": 5.0, "p90": 9.0, "max": 10.0} and metrics.quantiles([]) == {}


def test_rubric_report_is_named_after_the_set_style_and_subset(tmp_path):
    p = tmp_path / "answers_blind.jsonl"
    assert suites.rubric_name(p, "evidence", None) == "answers_blind"
    assert suites.rubric_name(p, "evidence", 3) == "answers_blind_every3"
    assert suites.rubric_name(p, "passages", 3) == "answers_blind_passages_every3"


def test_suites_return_data_and_print_nothing(assistant, eval_data, tmp_path, capsys):
    a = assistant.derive(index_dir=tmp_path / "suite-index")
    result = suites.run("evidence", a)
    assert result.kind == result.name == "evidence" and result.data["n"] == 3  # h1, p1 and a1: answerable, with a gold text
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="unknown eval suite"):
        suites.run("nonsense", a)
    files = report.write(tmp_path, result)
    assert [f.name for f in files] == ["evidence.md"]  # evidence and abstain write Markdown only
    assert "Evidence selection (3 answerable" in files[0].read_text("utf-8")


def test_eval_answers_on_a_rubric_set_every_nth(assistant, eval_data, tmp_path, capsys):
    rows = [{"id": f"b{i}", "question": q, "covered": cov, "must": [["Dropout"]] if cov else [], "must_not": ["必须开启"],
             "source": "notes.md" if cov else None, "gold_contains": "测试时关闭 Dropout" if cov else None}
            for i, (q, cov) in enumerate([("测试的时候要用 Dropout 吗?", True), ("学习率太大会怎样?", True),
                                          ("红烧肉怎么做才好吃？", False), ("梯度爆炸怎么缓解", True)])]
    blind = eval_data / "blind.jsonl"
    blind.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    assert _eval(assistant, tmp_path, "answers", "--set", str(blind), "--every", "2") == 0
    out = tmp_path / "results"
    r = json.loads((out / "blind_every2.json").read_text("utf-8"))
    assert [it["id"] for it in r["items"]] == ["b0", "b2"] and r["meta"]["answerable"] == 1
    assert r["abstain"]["recall"] == 1.0  # the out-of-corpus question is declined
    assert "# Answers: blind.jsonl (2 questions" in (out / "blind_every2.md").read_text("utf-8")
    assert capsys.readouterr().out.startswith("answers: correct ")


def test_each_drives_the_assistants_progress_bar_and_closes_it():
    made = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc, self.n, self.closed, self.note = total, desc, 0, False, ""
            made.append(self)

        def set_postfix_str(self, s, refresh=True):
            self.note = s

        def update(self):
            self.n += 1

        def close(self):
            self.closed = True

    assert list(data.each([1, 2, 3], Bar, "mcq")) == [1, 2, 3]
    (bar,) = made
    assert (bar.total, bar.desc, bar.n, bar.closed) == (3, "mcq", 3, True) and bar.note.endswith("s/item")
    assert list(data.each([1, 2], None)) == [1, 2]  # no factory (tests, embedding): no bar
