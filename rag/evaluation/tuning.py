"""The suites that tune the answer path on the tuning sets (eval/retrieval.jsonl + eval/answers.jsonl):

- `rag eval evidence`: how often evidence selection keeps the gold sentence (no LLM; for tuning).
- `rag eval abstain`: the abstain signals of each question, a cross-validated logistic fit, and
  (on the full set) the saved calibration the assistant declines by (rag/abstain.py).
"""

from __future__ import annotations

from typing import Sequence

from .data import covered_of, each, evidence_has_gold, first_gold_rank, golds_of
from .metrics import rate


def run_evidence(a, items: Sequence[dict], k: int | None = None) -> dict:
    from ..evidence import quotes, select_evidence

    rows = []
    for it in items:
        gs = golds_of(it)
        if not covered_of(it) or not gs or not any(g[2] for g in gs):
            continue
        ret = a.retrieve(it["question"], k)
        ev = select_evidence(ret.query, ret.hits, a.embedder)
        top = quotes(ev) if ev else []  # the sentences the answer opens with
        rows.append({"id": it["id"], "gold_rank": first_gold_rank([h.chunk for h in ret.hits], gs),
                     "evidence_gold": evidence_has_gold(ev, gs), "quote_gold": evidence_has_gold(top, gs),
                     "chars": sum(len(e.text) for e in ev)})
    retrieved = [r for r in rows if r["gold_rank"] is not None]
    return {"n": len(rows), "evidence_recall": rate([r["evidence_gold"] for r in rows]),
            "quote_gold": rate([r["quote_gold"] for r in rows]),
            "evidence_recall_when_retrieved": rate([r["evidence_gold"] for r in retrieved]),
            "hit@k": rate([r["gold_rank"] is not None for r in rows]),
            "mean_chars": (sum(r["chars"] for r in rows) / len(rows)) if rows else 0.0, "items": rows}


def abstain_items(items: Sequence[dict]) -> list[dict]:
    """Every unanswerable question and every 4th answerable paraphrase (paraphrases: the hard case;
    about balanced, and each costs one prompt of LLM reading, 3-8 s here)."""
    inside = [i for i in items if covered_of(i) and i.get("kind") != "heading"]
    outside = [i for i in items if not covered_of(i)]
    return outside + inside[::4]


def abstain_rows(a, items: Sequence[dict], k: int | None = None) -> list[dict]:
    """The abstain signals of each question, the LLM judge included (one short scoring each)."""
    from .. import prompts
    from ..evidence import select_evidence

    rows = []
    for it in each(items, a.progress, "abstain"):
        ret = a.retrieve(it["question"], k)
        ev = select_evidence(ret.query, ret.hits, a.embedder) if ret.hits else []
        # the judge as questions meet it: linked from the chunk caches when the assistant links them
        judge = a.judge(prompts.evidence_messages(it["question"], ev, ret.hits), a.linked_passages(ret.hits)) \
            if ev else -10.0
        x = a.abstain_signals(ret, ev, judge if judge is not None else 0.0)
        rows.append({"id": it["id"], "covered": covered_of(it), "x": x})
    return rows


def fit_abstain(model_id: str, rows: list[dict]) -> dict:
    """Cross-validated fits of feature subsets; the full model is saved, the others are for the report."""
    from ..abstain import FEATURES, fit

    X, y = [r["x"] for r in rows], [r["covered"] for r in rows]
    subsets = {"retrieval only": [0, 1], "retrieval + evidence": [0, 1, 2], "judge only": [3],
               "retrieval + evidence + judge": [0, 1, 2, 3], "all five (+ unseen terms)": [0, 1, 2, 3, 4]}
    report = {name: fit(model_id, X, y, used=used).cv for name, used in subsets.items()}
    cal = fit(model_id, X, y)
    return {"calibration": cal, "report": report, "features": list(FEATURES)}


def run_abstain(a, items: Sequence[dict], k: int | None = None, save: bool = False) -> dict:
    """Signals, fits, and with `save` the calibration written where the assistant reads it."""
    model = getattr(a.generator, "model_id", "?")
    rows = abstain_rows(a, items, k)
    fitted = fit_abstain(model, rows)
    cal = fitted["calibration"]
    if save:
        cal.save()
    return {"meta": {"model": model, "rows": len(rows), "saved": save}, "cv": fitted["report"],
            "calibration": cal.__dict__, "features": fitted["features"], "items": rows}
