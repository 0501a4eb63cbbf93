"""MCQ scoring and decision rules (rag/evaluation/mcq.py, mcq_rules.py) on hand-made scores and fakes."""

from __future__ import annotations

import copy
import random

import pytest

from rag.evaluation import mcq, mcq_rules
from rag.evaluation.mcq_judge import positive_form


def test_rotations_show_every_option_at_every_position_whatever_the_given_order():
    opts = ["c", "a", "d", "b"]
    rots = mcq.rotations(opts)
    assert len(rots) == 4 and rots[0] == [1, 3, 0, 2]  # the canonical (text-sorted) order first
    for pos in range(4):
        assert sorted(r[pos] for r in rots) == [0, 1, 2, 3]
    shuffled = [opts[j] for j in (2, 0, 3, 1)]
    shown = lambda os, rs: sorted(tuple(os[j] for j in r) for r in rs)  # noqa: E731
    assert shown(opts, rots) == shown(shuffled, mcq.rotations(shuffled))  # the model sees the same prompts


def test_rotations_keep_options_that_refer_to_others_in_place():
    opts = ["卷积神经网络", "循环神经网络", "全连接神经网络", "选项A和B"]
    assert mcq.rotations(opts) == [[0, 1, 2, 3]]  # A, B, D pinned; C alone
    opts = ["学习率太低", "正则参数太高", "陷入局部最小值", "以上都有可能"]
    rots = mcq.rotations(opts)
    assert len(rots) == 3 and all(r[3] == 3 for r in rots)


def test_verdict_stems_are_not_negated():
    assert positive_form("这种陈述正确还是错误?") == ("这种陈述正确还是错误?", False)
    assert positive_form("以下说法有误的是") == ("以下说法正确的是", True)
    assert positive_form("下列哪项不属于正则化方法？")[1]


def test_decide_single_answer_gets_exactly_one_and_negated_takes_the_worst():
    assert mcq_rules.decide([0.1, 2.0, -1.0], False, False, [0, 0, 0]) == [1]
    assert mcq_rules.decide([0.1, 2.0, -1.0], True, False, [0, 0, 0]) == [2]
    assert mcq_rules.decide([1.0, 1.0], False, False, [0, 0]) == [0]  # tie: lower option id
    # multi: every option the judge calls right, at least two (topped up by the rule's order)
    assert mcq_rules.decide([0.5, 2.0, -1.0, 0.0], False, True, [1.0, 2.0, 0.5, -1.0]) == [0, 1, 2]
    assert mcq_rules.decide([0.5, 2.0, -1.0], False, True, [-1.0, -1.0, -1.0]) == [0, 1]
    assert mcq_rules.decide([0.5, 2.0, -1.0], True, True, [-1.0, 1.0, 1.0]) == [0, 2]


def _row(i, gold, good, n=4, negated=False, noise=0.0, rng=None):
    """A synthetic item whose signals favour option `good` (with evidence) and say nothing closed-book."""
    rng = rng or random.Random(i)

    def sig(strength):
        v = lambda: [(strength if j == good else 0.0) + rng.uniform(-noise, noise) for j in range(n)]  # noqa: E731
        return {"text": v(), "text_tokens": [2] * n, "judge": v(),
                "letter": {"rotations": [v() for _ in range(n)]}}
    return {"id": i, "options": [f"o{j}" for j in range(n)], "gold": gold, "negated": negated, "perm": list(range(n)),
            "signals": (sigs := {"rag": sig(2.0), "closed": sig(0.0)}), "signals_shuffled": copy.deepcopy(sigs), "baseline": {"expected_exact": 0.0}, "chance": 1 / n,
            "explanation_retrieved": None, "category": [], "derived_from": None}


def test_lift_rules_see_the_evidence_and_closed_book_does_not():
    rng = random.Random(0)
    rows = [_row(i, [i % 4], i % 4, noise=0.5, rng=rng) for i in range(12)]
    r = mcq_rules.summarize(copy.deepcopy(rows), headline_rule="judge+letter-rot+text-lift", tuned_on=False)
    assert r["headline"]["rag_original"] == 1.0 == r["headline"]["rag_shuffled"]
    assert r["headline"]["closed_original"] < 0.75
    assert r["headline"]["source"] == "fixed rule"
    # a negated stem whose evidence favours option 2 in its positive form: the answer is the worst option
    neg = _row(99, [1], 1, negated=True)
    neg["signals"]["rag"]["judge"] = [0.0, -3.0, 0.0, 0.0]
    assert mcq_rules.predict(neg, "judge", "rag/original", mcq_rules.spreads(rows)) == [1]


def test_cross_validated_headline_on_the_tuning_set():
    rng = random.Random(1)
    rows = [_row(i, [i % 3], i % 3, n=3, noise=0.3, rng=rng) for i in range(9)]
    r = mcq_rules.summarize(rows, tuned_on=True)
    assert r["headline"]["source"] == "leave-one-out cross-validation"
    assert r["headline"]["rag_original"] == r["headline"]["cross_validated"]["rag/original"]
    assert sum(r["headline"]["cv_picked"].values()) == 9


def test_the_tuning_set_is_recognised_by_content(tmp_path):
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "eval" / "mcq.jsonl"
    if not committed.exists():
        pytest.skip("eval/mcq.jsonl missing")
    assert mcq_rules.is_tuning_set(committed)
    other = tmp_path / "mcq.jsonl"
    other.write_bytes(committed.read_bytes() + b"\n")
    assert not mcq_rules.is_tuning_set(other)
    assert not mcq_rules.is_tuning_set(tmp_path / "missing.jsonl")
