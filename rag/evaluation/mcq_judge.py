"""`rag eval mcq-judge`: multiple choice as one true/false judgement per option, against its evidence.

Scoring options as continuations of "正确答案是:" made the answer depend on their order (50.0% in the
original order, 40.6% shuffled) and on calibration tricks chosen on 32 items. Here every option is
judged alone: retrieval and evidence selection for question + option, then the log-odds of "对" vs
"错" for "is this candidate answer right?". The prediction is fixed a priori, not tuned: a single-answer
item takes the best option; a negated stem ("哪个不正确/不可取", 36% of an external exam) is turned
into its positive form and takes the *worst* option, so the small model never has to reason through
a double negation; a multi-answer item takes every option judged right (log-odds > 0), at least one.
"""

from __future__ import annotations

import re
import time
from typing import Sequence

from .data import each

# Negations in a question stem, each with its positive form.
_NEGATED = [("不正确", "正确"), ("错误", "正确"), ("有误", "正确"), ("错的", "对的"), ("不对", "对"),
            ("不可取", "可取"), ("不属于", "属于"), ("不是", "是"), ("不能", "能"), ("不会", "会"),
            ("不包括", "包括"), ("不包含", "包含"), ("不需要", "需要"), ("不适合", "适合"), ("不适用", "适用"),
            ("不合理", "合理"), ("不恰当", "恰当"), ("不可以", "可以"), ("不用于", "用于"), ("不具有", "具有"),
            ("不具备", "具备"), ("不常用", "常用"), ("incorrect", "correct"), ("false", "true"),
            ("except", ""), ("not ", "")]
# "这种说法正确还是错误?" asks for a verdict, not for the wrong option.
_VERDICT = re.compile(r"(正确|对)\s*(还是|或|或者)\s*(错误|错)|是否正确|对不对|true or false", re.IGNORECASE)


def positive_form(question: str) -> tuple[str, bool]:
    """(the stem with its negation removed, whether it was negated)."""
    if _VERDICT.search(question):
        return question, False
    low = question.lower()
    for neg, pos in _NEGATED:
        i = low.find(neg)
        if i >= 0:
            return question[:i] + pos + question[i + len(neg):], True
    return question, False


def decide(scores: Sequence[float], negated: bool, multi: bool, ids: Sequence[int] | None = None) -> list[int]:
    """Positions chosen; ties go to the lowest original option id (`ids`), so order cannot matter."""
    ids = list(ids if ids is not None else range(len(scores)))
    best = max(range(len(scores)), key=lambda i: (scores[i], -ids[i]))
    if negated:
        return [min(range(len(scores)), key=lambda i: (scores[i], ids[i]))]
    if multi:
        return [i for i, s in enumerate(scores) if s > 0] or [best]
    return [best]


def judge_options(a, question: str, options: Sequence[str], rag: bool, k: int | None = None) -> list[float]:
    from .. import prompts
    from ..evidence import select_evidence

    stem, _ = positive_form(question)
    out = []
    for opt in options:
        evidence = None
        if rag:
            query = f"{stem} {opt}"
            ret = a.search(query, k)
            ev = select_evidence(query, ret.hits, a.embedder)
            evidence = "\n".join(e.text for e in ev) or None
        (t, _), (f, _) = a.generator.score(prompts.option_messages(stem, opt, evidence), prompts.OPTION_PREFIX,
                                           [prompts.OPTION_TRUE, prompts.OPTION_FALSE])
        out.append(t - f)
    return out


def run(a, items: Sequence[dict], k: int | None = None) -> dict:
    import random

    rows, t0 = [], time.perf_counter()
    for it in each(items, a.progress, "mcq-judge"):
        q, opts, gold = it["question"], it["options"], sorted(it["answer"])
        _, negated = positive_form(q)
        row = {"id": it["id"], "question": q, "gold": gold, "negated": negated, "multi": len(gold) > 1}
        for cond in ("rag", "closed"):
            scores = judge_options(a, q, opts, cond == "rag", k)
            pred = sorted(decide(scores, negated, len(gold) > 1))
            # The same judgements in a shuffled order: each option was judged alone, so only the
            # decision could depend on order (it does not); checked, not assumed.
            perm = list(range(len(opts)))
            random.Random(f"mcq:{it['id']}").shuffle(perm)
            shuffled = sorted(perm[i] for i in decide([scores[j] for j in perm], negated, len(gold) > 1, perm))
            row[cond] = {"scores": [round(s, 3) for s in scores], "pred": pred, "correct": pred == gold,
                         "correct_shuffled": shuffled == gold}
        rows.append(row)

    def acc(cond: str, key: str = "correct", pool=None) -> float | None:
        pool = rows if pool is None else pool
        return (sum(r[cond][key] for r in pool) / len(pool)) if pool else None

    neg = [r for r in rows if r["negated"]]
    pos = [r for r in rows if not r["negated"]]
    return {"meta": {"n_items": len(rows), "negated": len(neg), "seconds": time.perf_counter() - t0,
                     "model": getattr(a.generator, "model_id", "?")},
            "rag": acc("rag"), "rag_shuffled": acc("rag", "correct_shuffled"), "closed": acc("closed"),
            "closed_shuffled": acc("closed", "correct_shuffled"),
            "rag_negated": acc("rag", pool=neg), "rag_other": acc("rag", pool=pos), "items": rows}

