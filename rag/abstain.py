"""Decide "covered or not" from the evidence, not from word overlap alone.

Signals: the retrieval gate's two absolute scores of the best hit (share of the question's IDF mass
matched, dense cosine), the best evidence sentence's score, the local model's likelihood that
the evidence answers the question (log P("能") - log P("不能") after prompts.JUDGE_PREFIX), and how
many of the question's technical terms no note mentions at all (`unseen_terms`). The greedy
reply says "能" to nearly everything, but the log-odds still rank questions; a logistic regression
over the five signals, fitted on labelled questions (`rag eval abstain`, cross-validated), turns them
into P(covered). The fit belongs to one generator: with another model the retrieval gate decides.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

FEATURES = ("coverage", "dense", "evidence", "judge", "unseen")
CALIBRATION_FILE = Path(__file__).with_name("abstain.json")


@dataclass
class Calibration:
    model: str  # the generator whose judge scores were fitted
    weights: list[float]
    bias: float
    mean: list[float]  # feature standardization
    scale: list[float]
    threshold: float  # P(covered) below which the assistant declines
    cv: dict  # cross-validated precision/recall/F1 of abstaining, and how it was fitted

    def probability(self, x: Sequence[float]) -> float:
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def save(self, path: Path = CALIBRATION_FILE) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n")
        tmp.replace(path)


def load_calibration(model_id: str, path: Path = CALIBRATION_FILE) -> Calibration | None:
    """The fitted calibration for this generator, or None (no file, a damaged one, another model)."""
    try:
        data = json.loads(path.read_text())
        cal = Calibration(**data)
    except (OSError, ValueError, TypeError):
        return None
    return cal if cal.model == model_id and len(cal.weights) == len(FEATURES) else None


_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9\-]*")


def unknown_names(question: str, keyword_leg) -> list[str]:
    """Technical names in the question that no note mentions: "LoRA", "GELU", "Kaiming", "RLHF".

    A near-topic question shares most of its words with the notes ("Kaiming 初始化为什么方差是 2/n"
    matches 初始化 and 方差), so coverage and the judge both say "covered"; the name the question is
    about is the tell. Latin words with a capital letter count (a sentence-initial "Does" does not),
    unless the glossary knows them; a name is unknown when the jieba keyword leg finds no passage with
    it. On the tuning sets this flags 31 of 55 unanswerable questions and 2 of 342 answerable ones
    (LeNet, NCHW)."""
    from .lexical import glossary_matches

    out = []
    for m in _LATIN.finditer(question):
        w = m.group(0)
        if len(w) < 3 or not any(c.isupper() for c in w) or w in out:
            continue
        before = question[:m.start()].rstrip()
        after = question[m.end():].lstrip()[:1]
        if w[0].isupper() and w[1:].islower() and (not before or before[-1] in ".?!。？！") and after.isascii():
            continue  # an ordinary word starting an English sentence ("Does …"; "Kaiming 初始化…" is a name)
        if glossary_matches(w) or keyword_leg.search(w, 1):  # a non-glossary word: no expansion to mask it
            continue
        out.append(w)
    return out


_CJK = re.compile(r"[\u4e00-\u9fff]")


def unseen_terms(question: str, keyword_leg) -> float:
    """How many Latin words of a Chinese question no note contains ("mode collapse", "checkpointing").
    A near-topic question is about a term the notes lack while sharing its other words with them; in a
    Chinese sentence a Latin word is a technical term (in an English question it may be any word, so
    those count none). Cross-validated abstain F1 on the tuning questions: 0.906 without it, 0.944
    with it (`rag eval abstain`); the share of unseen Chinese words, also measured, added nothing."""
    from .lexical import glossary_matches

    if not _CJK.search(question):
        return 0.0
    words = [w for w in set(keyword_leg.analyze(question)) if not _CJK.search(w) and len(w) >= 3 and not w.isdigit()]
    return float(sum(keyword_leg.doc_freq(w) == 0 and not glossary_matches(w) for w in words))


def features(retrieval, evidence_score: float, judge: float, unseen: float) -> list[float]:
    return [retrieval.best_coverage, retrieval.best_dense, evidence_score, judge, unseen]


# ---------------------------------------------------------------- fitting (numpy, no sklearn)

def _fit_logistic(X, y, l2: float = 1.0, iters: int = 50):
    """Newton's method for L2-regularized logistic regression on standardized features."""
    import numpy as np

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean, scale = X.mean(0), X.std(0) + 1e-9
    Z = np.hstack([np.ones((len(X), 1)), (X - mean) / scale])
    w = np.zeros(Z.shape[1])
    reg = np.eye(Z.shape[1]) * l2
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -30, 30)))
        grad = Z.T @ (p - y) + reg @ w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[1:].tolist(), float(w[0]), mean.tolist(), scale.tolist()


def prf(pred_abstain: Sequence[bool], actual_abstain: Sequence[bool]) -> dict:
    tp = sum(p and a for p, a in zip(pred_abstain, actual_abstain))
    fp = sum(p and not a for p, a in zip(pred_abstain, actual_abstain))
    fn = sum(a and not p for p, a in zip(pred_abstain, actual_abstain))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    answerable = sum(not a for a in actual_abstain)
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "declined_answerable": fp / answerable if answerable else 0.0, "n": len(actual_abstain)}


def _best_threshold(probs: Sequence[float], covered: Sequence[bool]) -> float:
    """The threshold with the best abstain F1 among those declining ≤ 5% of answerable questions."""
    grid = sorted(set(round(p, 4) for p in probs)) + [1.0]
    best, best_key = 0.5, (-1.0, 0.0)
    for t in grid:
        r = prf([p < t for p in probs], [not c for c in covered])
        key = (r["f1"] if r["declined_answerable"] <= 0.05 else r["f1"] - 1.0, -abs(t - 0.5))
        if key > best_key:
            best, best_key = t, key
    return best


def cross_validate(X: Sequence[Sequence[float]], covered: Sequence[bool], folds: int = 5, seed: int = 0) -> list[bool]:
    """Decline-or-not for every row, each predicted by a fit and threshold made on the other folds."""
    idx = list(range(len(X)))
    random.Random(seed).shuffle(idx)
    preds = [False] * len(X)
    for f in range(folds):
        test = set(idx[f::folds])
        train = [i for i in idx if i not in test]
        w, b, m, s = _fit_logistic([X[i] for i in train], [covered[i] for i in train])
        cal = Calibration("cv", w, b, m, s, 0.5, {})
        t = _best_threshold([cal.probability(X[i]) for i in train], [covered[i] for i in train])
        for i in test:
            preds[i] = cal.probability(X[i]) < t
    return preds


def fit(model_id: str, X: Sequence[Sequence[float]], covered: Sequence[bool], folds: int = 5,
        seed: int = 0, used: Sequence[int] | None = None) -> Calibration:
    """Fit on all rows; report the abstain P/R/F1 of k-fold cross-validation (threshold chosen inside
    each training fold, so the reported numbers never saw their own labels)."""
    used = list(used or range(len(FEATURES)))
    Xu = [[row[i] for i in used] for row in X]
    cv = prf(cross_validate(Xu, covered, folds, seed), [not c for c in covered])
    w, b, m, s = _fit_logistic(Xu, covered)
    full = [0.0] * len(FEATURES)
    mean, scale = [0.0] * len(FEATURES), [1.0] * len(FEATURES)
    for j, i in enumerate(used):
        full[i], mean[i], scale[i] = w[j], m[j], s[j]
    cal = Calibration(model_id, full, b, mean, scale, 0.5, {})
    cal.threshold = _best_threshold([cal.probability(x) for x in X], covered)
    cal.cv = {**cv, "folds": folds, "rows": len(X), "features": [FEATURES[i] for i in used]}
    return cal
