"""`rag eval answers`: free-form answers, scored two ways.

Keyword set (eval/answers.jsonl: `in_corpus`, `reference_keywords`; plain `rag eval answers`): citation
precision, keyword recall, abstain precision/recall/F1 of the retrieval gate and of the model.

Rubric sets (`--set`, e.g. eval/answers_blind.jsonl, written blind by someone who never saw the
pipeline's output): `must` is a list of facts, each a list of accepted surface forms (any one counts);
`must_not` lists the contradictions; `source` + `gold_contains` name the passage that answers it;
`covered` says whether the notes answer it at all. An answer is correct when it is not declined,
states every must-fact and no must-not. Keyword-style items given as a --set get no rubric verdict.
"""

from __future__ import annotations

import re
import time
from typing import Sequence

from ..abstain import prf as abstain_prf  # with the share of answerable questions declined
from .data import covered_of, each, evidence_has_gold, first_gold_rank, golds_of, is_gold, normalize
from .metrics import keyword_recall, prf, quantile, rate

_MODEL_ABSTAINS = re.compile(r"没有相关内容|没有找到|无法回答|未提及|没有提到|do(?:es)? not (?:cover|mention|contain)",
                             re.IGNORECASE)


# ---------------------------------------------------------------- keyword set

def _keyword_row(it: dict, ans, seconds: float) -> dict:
    golds = golds_of(it)
    cited = [h.chunk for _, h in ans.sources]
    row = {"id": it["id"], "question": it["question"], "in_corpus": it["in_corpus"], "answer": ans.text,
           "abstained": ans.abstained, "model_abstained": (not ans.abstained) and bool(_MODEL_ABSTAINS.search(ans.text)),
           "cited": [{"source": c.source, "line": c.line, "heading": c.heading[:60],
                      "gold": is_gold(c, golds) if golds else None,
                      "gold_source": c.source in {g[0] for g in golds}} for c in cited],
           "retrieved_gold_rank": first_gold_rank([h.chunk for h in ans.hits], golds) if golds else None,
           "keyword_recall": keyword_recall(ans.text, it.get("reference_keywords") or []) if it["in_corpus"] else None,
           "seconds": seconds}
    if it["in_corpus"] and ans.abstained:
        row["keyword_recall"] = 0.0 if it.get("reference_keywords") else None
    return row


def run_keywords(a, items: Sequence[dict], k: int | None = None) -> dict:
    a.generator  # load before timing the first item
    rows = []
    t_start = time.perf_counter()
    for it in each(items, a.progress, "answers"):
        t0 = time.perf_counter()
        ans = a.answer(it["question"], k)
        rows.append(_keyword_row(it, ans, time.perf_counter() - t0))
    return summarize_keywords(rows, seconds=time.perf_counter() - t_start, k=k or a.settings.top_k,
                              model=getattr(a.generator, "model_id", "?"), embedder=a.settings.embedder)


def summarize_keywords(rows: list[dict], **meta) -> dict:
    inc = [r for r in rows if r["in_corpus"]]
    cites = [c for r in inc for c in r["cited"]]
    kr = [r["keyword_recall"] for r in inc if r["keyword_recall"] is not None]
    actual = [not r["in_corpus"] for r in rows]
    return {
        "meta": {**meta, "n_items": len(rows), "in_corpus": len(inc), "out_of_corpus": len(rows) - len(inc)},
        "citation_precision": (sum(bool(c["gold"]) for c in cites) / len(cites)) if cites else None,
        "citation_precision_source_only": (sum(c["gold_source"] for c in cites) / len(cites)) if cites else None,
        "citations": len(cites),
        "answers_with_gold_citation": (sum(any(c["gold"] for c in r["cited"]) for r in inc) / len(inc)) if inc else None,
        "answers_without_citation": sum(1 for r in inc if not r["abstained"] and not r["cited"]),
        "gold_retrieved@k": (sum(r["retrieved_gold_rank"] is not None for r in inc) / len(inc)) if inc else None,
        "keyword_recall": (sum(kr) / len(kr)) if kr else None,
        "abstain_gate": prf([r["abstained"] for r in rows], actual),
        "abstain_gate_or_model": prf([r["abstained"] or r["model_abstained"] for r in rows], actual),
        "items": rows,
    }


# ---------------------------------------------------------------- rubric sets

def rubric(answer: str, item: dict) -> dict:
    a = normalize(answer, quotes=True)
    facts = [any(normalize(f, quotes=True) in a for f in forms) for forms in item.get("must") or []]
    bad = [m for m in item.get("must_not") or [] if normalize(m, quotes=True) and normalize(m, quotes=True) in a]
    return {"facts": facts, "must_not_found": bad}


def score_item(item: dict, ans) -> dict:
    cov = covered_of(item)
    gs = golds_of(item)
    cited = [h.chunk for _, h in ans.sources]
    rank = first_gold_rank([h.chunk for h in ans.hits], gs) if gs else None
    row = {"id": item["id"], "question": item["question"], "covered": cov, "kind": item.get("kind", ""),
           "lang": item.get("lang", ""), "answer": ans.text, "abstained": ans.abstained,
           "p_covered": ans.p_covered, "gold_rank": rank,
           "evidence": [f"[{e.n}] {e.text}" for e in ans.evidence],
           "evidence_gold": evidence_has_gold(ans.evidence, gs) if gs else None,
           "cited": [{"source": c.source, "line": c.line, "gold": is_gold(c, gs) if gs else None} for c in cited],
           "verification": ans.verified.note() if ans.verified else "",
           # every answer sentence's check, so failures can be read (and checks tuned on tuning sets)
           "verdicts": [{"claim": v.claim, "status": v.status, "support": round(v.support, 3),
                         "judge": None if v.judge is None else round(v.judge, 3)}
                        for v in (ans.verified.verdicts if ans.verified else [])],
           "first_token": ans.timings.get("first_token"), "evidence_shown": ans.timings.get("evidence_shown"),
           "seconds": ans.timings.get("total")}
    if "must" in item and cov:
        r = rubric(ans.text, item)
        row.update(r)
        row["contradiction"] = (not ans.abstained) and bool(r["must_not_found"])
        row["correct"] = (not ans.abstained) and all(r["facts"]) and not r["must_not_found"]
    return row


def run_rubric(a, items: Sequence[dict], k: int | None = None) -> dict:
    a.generator  # load before timing
    rows, t0 = [], time.perf_counter()
    for it in each(items, a.progress, "answers"):
        rows.append(score_item(it, a.answer(it["question"], k)))
    return summarize_rubric(rows, seconds=time.perf_counter() - t0, k=k or a.settings.top_k,
                            model=getattr(a.generator, "model_id", "?"), embedder=a.settings.embedder,
                            answer_style=a.settings.answer_style)


def summarize_rubric(rows: list[dict], **meta) -> dict:
    ans = [r for r in rows if r["covered"]]
    rub = [r for r in ans if "correct" in r]
    answered = [r for r in rub if not r["abstained"]]
    cites = [c for r in ans for c in r["cited"] if c["gold"] is not None]
    return {
        "meta": {**meta, "n_items": len(rows), "answerable": len(ans), "not_covered": len(rows) - len(ans)},
        "correct": rate([r["correct"] for r in rub]),
        "correct_when_answered": rate([r["correct"] for r in answered]),
        "contradiction_rate": rate([r["contradiction"] for r in answered]),
        "citation_precision": rate([c["gold"] for c in cites]), "citations": len(cites),
        "evidence_recall": rate([r["evidence_gold"] for r in ans if r["evidence_gold"] is not None]),
        "hit@5": rate([r["gold_rank"] is not None and r["gold_rank"] <= 5 for r in ans if r["gold_rank"] is not None
                       or r["evidence_gold"] is not None]),
        "mrr@5": (sum(1 / r["gold_rank"] for r in ans if r["gold_rank"] and r["gold_rank"] <= 5) / len(ans)) if ans else None,
        "abstain": abstain_prf([r["abstained"] for r in rows], [not r["covered"] for r in rows]),
        "first_token_p50": quantile([r["first_token"] for r in rows], 0.5),
        "first_token_p95": quantile([r["first_token"] for r in rows], 0.95),
        "evidence_shown_p50": quantile([r["evidence_shown"] for r in rows], 0.5),
        "by_kind": {kind: {"n": len(g), "correct": rate([r["correct"] for r in g if "correct" in r]),
                           "abstained": rate([r["abstained"] for r in g])}
                    for kind in sorted({r["kind"] for r in rows})
                    for g in [[r for r in rows if r["kind"] == kind]]},
        "items": rows,
    }
