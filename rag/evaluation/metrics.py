"""Scoring rules of the eval suites: pure functions of predictions and gold labels (unit-tested)."""

from __future__ import annotations

import math
import random
from typing import Iterable, Sequence

from .data import normalize

# Multi-answer rule, fixed before looking at results: every option whose softmax share is at least
# half the best one's (score within ln 2 of the best). A model that spreads its mass evenly over m
# correct options puts each at 1/m, so all of them pass while a clear single answer stays alone.
GAP_RATIO = 0.5
OFF = 2.0  # a threshold no coverage share or cosine reaches: that signal never vouches for coverage


# ---------------------------------------------------------------- answer sets (MCQ)

def decide(scores: Sequence[float], ratio: float = GAP_RATIO) -> list[int]:
    """Indices whose softmax share is >= ratio x the best share; ratio 1.0 keeps only the best."""
    if not scores:
        return []
    best = max(scores)
    if ratio >= 1.0:
        return [scores.index(best)]
    gap = -math.log(ratio)
    return [i for i, s in enumerate(scores) if s >= best - gap - 1e-12]


def exact_match(pred: Iterable[int], gold: Iterable[int]) -> bool:
    return set(pred) == set(gold)


def jaccard(pred: Iterable[int], gold: Iterable[int]) -> float:
    p, g = set(pred), set(gold)
    return len(p & g) / len(p | g) if p | g else 1.0


def chance_exact(n_options: int, n_gold: int) -> float:
    """Exact-match probability of guessing a uniformly random answer set of the right size."""
    return 1.0 / math.comb(n_options, n_gold)


def tie_break_expectation(scores: Sequence[float], gold: Sequence[int]) -> float:
    """Expected exact match of picking one top-scoring option at random (baseline; single pick)."""
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s == best]
    return (1.0 / len(tied)) if len(gold) == 1 and gold[0] in tied else 0.0


# ---------------------------------------------------------------- ranking

def hit_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def keyword_recall(answer: str, keywords: Sequence[str]) -> float | None:
    if not keywords:
        return None
    a = normalize(answer)
    return sum(1 for k in keywords if normalize(k) in a) / len(keywords)


# ---------------------------------------------------------------- abstaining

def prf(predicted: Sequence[bool], actual: Sequence[bool]) -> dict:
    """Precision / recall / F1 of the positive class (here: 'abstain')."""
    tp = sum(1 for p, a in zip(predicted, actual) if p and a)
    fp = sum(1 for p, a in zip(predicted, actual) if p and not a)
    fn = sum(1 for p, a in zip(predicted, actual) if not p and a)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "tn": len(actual) - tp - fp - fn}


def abstains(best_coverage: float, best_dense: float, coverage_threshold: float, dense_threshold: float) -> bool:
    """The retriever's rule (retriever.py): answer if either signal clears its threshold."""
    return not (best_coverage >= coverage_threshold or best_dense >= dense_threshold)


def sweep_thresholds(rows: Sequence[tuple[float, float, bool]], coverage_grid: Sequence[float],
                     dense_grid: Sequence[float]) -> list[dict]:
    """F1 of abstaining for every (coverage, dense) pair; rows are (best_cov, best_dense, is_out_of_corpus)."""
    out = []
    actual = [r[2] for r in rows]
    for ct in coverage_grid:
        for dt in dense_grid:
            pred = [abstains(c, d, ct, dt) for c, d, _ in rows]
            out.append({"coverage": ct, "dense": dt, **prf(pred, actual)})
    return out


def best_setting(sweep: Sequence[dict]) -> dict:
    """Highest F1; ties go to higher precision (fewer wrongly refused questions), then lower thresholds."""
    return max(sweep, key=lambda r: (round(r["f1"], 9), round(r["precision"], 9), -r["coverage"], -r["dense"]))


def cross_validate(data, cov_grid, dense_grid, repeats: int = 5) -> dict:
    """Repeated 2-fold CV of the threshold choice: F1 on the half the thresholds were not tuned on."""
    scores = []
    for rep in range(repeats):
        rng = random.Random(1000 + rep)
        order = list(range(len(data)))
        rng.shuffle(order)
        halves = [order[: len(order) // 2], order[len(order) // 2:]]
        for train, test in (halves, halves[::-1]):
            b = best_setting(sweep_thresholds([data[i] for i in train], cov_grid, dense_grid))
            pred = [abstains(data[i][0], data[i][1], b["coverage"], b["dense"]) for i in test]
            scores.append(prf(pred, [data[i][2] for i in test])["f1"])
    return {"mean_f1": sum(scores) / len(scores), "min_f1": min(scores), "max_f1": max(scores), "folds": len(scores)}


# ---------------------------------------------------------------- summaries

def rate(xs: list) -> float | None:
    """Share of true values; None for no values (a report shows "–", not 0%)."""
    return (sum(map(bool, xs)) / len(xs)) if xs else None


def quantile(xs: list[float | None], q: float) -> float | None:
    """The value at position floor(q * n) of the sorted values present (the latency tables of the answers report)."""
    xs = sorted(x for x in xs if x is not None)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def quantiles(xs: list[float]) -> dict:
    """min / p10 / p50 / p90 / max by nearest rank (the signal tables of the retrieval report)."""
    if not xs:
        return {}
    s = sorted(xs)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"min": s[0], "p10": pick(0.1), "p50": pick(0.5), "p90": pick(0.9), "max": s[-1]}
