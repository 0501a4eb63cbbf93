"""Answer-correctness suites: rubric scoring of free-form answers, evidence recall, abstain calibration.

Rubric items (eval/answers_blind.jsonl, written blind by someone who never saw the pipeline's output):
`must` is a list of facts, each a list of accepted surface forms (any one counts); `must_not` lists the
contradictions; `source` + `gold_contains` name the passage that answers it; `covered` says whether
the notes answer it at all. An answer is correct when it is not declined, states every must-fact and
no must-not. Old-style items (eval/answers.jsonl: `in_corpus`, `reference_keywords`) are scored by
keyword recall only.
"""

from __future__ import annotations

import re
import time
import unicodedata
from typing import Sequence

from .abstain import FEATURES, fit, prf
from .lexical import bigrams

EVIDENCE_MATCH = 0.6  # share of the gold text's bigrams one evidence sentence must hold


def _norm(text: str | None) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return re.sub(r"[\s*`#“”\"'「」]+", "", text)


def covered_of(item: dict) -> bool:
    """Blind sets say `covered`, the answers set `in_corpus`, the retrieval set kind "out_of_corpus"."""
    for key in ("covered", "in_corpus"):
        if key in item:
            return bool(item[key])
    return item.get("kind") != "out_of_corpus"


def golds(item: dict) -> list[tuple[str, str | None, str | None]]:
    out = [(item.get("source"), item.get("gold_heading"), item.get("gold_contains"))]
    for g in (item.get("alt_sources") or []) + (item.get("alt_golds") or []):
        out.append((g.get("source"), g.get("gold_heading"), g.get("gold_contains")))
    return [g for g in out if g[0]]


def chunk_is_gold(chunk, gs) -> bool:
    from .evaluate import is_gold

    return is_gold(chunk, gs)


def evidence_has_gold(evidence, gs) -> bool:
    """Some selected sentence holds (most of) a gold text from a gold source."""
    for source, _, contains in gs:
        if not contains:
            continue
        want = set(bigrams(contains))
        for e in evidence:
            if e.source == source and want and len(want & set(bigrams(e.text))) / len(want) >= EVIDENCE_MATCH:
                return True
            if e.source == source and _norm(contains) in _norm(e.text):
                return True
    return False


def rubric(answer: str, item: dict) -> dict:
    a = _norm(answer)
    facts = [any(_norm(f) in a for f in forms) for forms in item.get("must") or []]
    bad = [m for m in item.get("must_not") or [] if _norm(m) and _norm(m) in a]
    return {"facts": facts, "must_not_found": bad}


def score_item(item: dict, ans) -> dict:
    cov = covered_of(item)
    gs = golds(item)
    cited = [h.chunk for _, h in ans.sources]
    rank = next((r for r, h in enumerate(ans.hits, 1) if chunk_is_gold(h.chunk, gs)), None) if gs else None
    row = {"id": item["id"], "question": item["question"], "covered": cov, "kind": item.get("kind", ""),
           "lang": item.get("lang", ""), "answer": ans.text, "abstained": ans.abstained,
           "p_covered": ans.p_covered, "gold_rank": rank,
           "evidence": [f"[{e.n}] {e.text}" for e in ans.evidence],
           "evidence_gold": evidence_has_gold(ans.evidence, gs) if gs else None,
           "cited": [{"source": c.source, "line": c.line, "gold": chunk_is_gold(c, gs) if gs else None} for c in cited],
           "verification": ans.verified.note() if ans.verified else "",
           "first_token": ans.timings.get("first_token"), "evidence_shown": ans.timings.get("evidence_shown"),
           "seconds": ans.timings.get("total")}
    if "must" in item and cov:
        r = rubric(ans.text, item)
        row.update(r)
        row["contradiction"] = (not ans.abstained) and bool(r["must_not_found"])
        row["correct"] = (not ans.abstained) and all(r["facts"]) and not r["must_not_found"]
    return row


def run(a, items: Sequence[dict], k: int | None, bar=None) -> dict:
    a.generator  # load before timing
    rows, t0 = [], time.perf_counter()
    for it in (bar(items) if bar else items):
        rows.append(score_item(it, a.answer(it["question"], k)))
    return summarize(rows, seconds=time.perf_counter() - t0, k=k or a.settings.top_k,
                     model=getattr(a.generator, "model_id", "?"), embedder=a.settings.embedder,
                     answer_style=a.settings.answer_style)


def _rate(xs: list) -> float | None:
    return (sum(map(bool, xs)) / len(xs)) if xs else None


def _quantile(xs: list[float], q: float) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def summarize(rows: list[dict], **meta) -> dict:
    ans = [r for r in rows if r["covered"]]
    rub = [r for r in ans if "correct" in r]
    answered = [r for r in rub if not r["abstained"]]
    cites = [c for r in ans for c in r["cited"] if c["gold"] is not None]
    return {
        "meta": {**meta, "n_items": len(rows), "answerable": len(ans), "not_covered": len(rows) - len(ans)},
        "correct": _rate([r["correct"] for r in rub]),
        "correct_when_answered": _rate([r["correct"] for r in answered]),
        "contradiction_rate": _rate([r["contradiction"] for r in answered]),
        "citation_precision": _rate([c["gold"] for c in cites]), "citations": len(cites),
        "evidence_recall": _rate([r["evidence_gold"] for r in ans if r["evidence_gold"] is not None]),
        "hit@5": _rate([r["gold_rank"] is not None and r["gold_rank"] <= 5 for r in ans if r["gold_rank"] is not None
                        or r["evidence_gold"] is not None]),
        "mrr@5": (sum(1 / r["gold_rank"] for r in ans if r["gold_rank"] and r["gold_rank"] <= 5) / len(ans)) if ans else None,
        "abstain": prf([r["abstained"] for r in rows], [not r["covered"] for r in rows]),
        "first_token_p50": _quantile([r["first_token"] for r in rows], 0.5),
        "first_token_p95": _quantile([r["first_token"] for r in rows], 0.95),
        "evidence_shown_p50": _quantile([r["evidence_shown"] for r in rows], 0.5),
        "by_kind": {kind: {"n": len(g), "correct": _rate([r["correct"] for r in g if "correct" in r]),
                           "abstained": _rate([r["abstained"] for r in g])}
                    for kind in sorted({r["kind"] for r in rows})
                    for g in [[r for r in rows if r["kind"] == kind]]},
        "items": rows,
    }


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _cell(text: str, n: int = 80) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def markdown(r: dict, title: str) -> str:
    m, ab = r["meta"], r["abstain"]
    mrr = "–" if r["mrr@5"] is None else f"{r['mrr@5']:.3f}"
    out = [f"# {title} ({m['n_items']} questions: {m['answerable']} answerable, {m['not_covered']} not covered)", "",
           f"Generator `{m['model']}`, embedder `{m['embedder']}`, k={m['k']}, answer style `{m['answer_style']}`. "
           f"Wall time {m['seconds']:.0f} s.", "",
           "| metric | value |", "|---|---|",
           f"| answers correct (all must-facts, no must-not; of answerable) | {_pct(r['correct'])} |",
           f"| correct when answered | {_pct(r['correct_when_answered'])} |",
           f"| contradictions (a must-not phrase in an answer) | {_pct(r['contradiction_rate'])} |",
           f"| citation precision (cited passage holds the gold text) | {_pct(r['citation_precision'])} of {r['citations']} |",
           f"| evidence recall (a selected sentence holds the gold text) | {_pct(r['evidence_recall'])} |",
           f"| gold passage retrieved in top 5 / MRR@5 | {_pct(r['hit@5'])} / {mrr} |",
           f"| abstain P / R / F1 | {_pct(ab['precision'])} / {_pct(ab['recall'])} / {ab['f1']:.3f} |",
           f"| answerable questions declined | {_pct(ab['declined_answerable'])} |",
           f"| evidence on screen p50 / first token p50, p95 (s) | {r['evidence_shown_p50'] or 0:.3f} / "
           f"{r['first_token_p50'] or 0:.1f}, {r['first_token_p95'] or 0:.1f} |", "",
           "By kind: " + "; ".join(f"{k or '-'} n={v['n']} correct {_pct(v['correct'])} declined {_pct(v['abstained'])}"
                                   for k, v in r["by_kind"].items()), "",
           "| id | covered | verdict | P(covered) | gold rank | evidence ✓ | check | answer |", "|---|---|---|---|---|---|---|---|"]
    for it in r["items"]:
        if not it["covered"]:
            verdict = "declined ✓" if it["abstained"] else "answered ✗"
        elif it["abstained"]:
            verdict = "declined ✗"
        elif "correct" in it:
            verdict = "correct" if it["correct"] else ("CONTRADICTION" if it["contradiction"] else
                                                       f"missing {sum(not f for f in it['facts'])} fact(s)")
        else:
            verdict = "answered"
        p = "–" if it["p_covered"] is None else f"{it['p_covered']:.2f}"
        ev = "–" if it["evidence_gold"] is None else ("✓" if it["evidence_gold"] else "✗")
        out.append(f"| {it['id']} | {'yes' if it['covered'] else 'no'} | {verdict} | {p} | {it['gold_rank'] or '–'} | "
                   f"{ev} | {_cell(it['verification'], 30) or ''} | {_cell(it['answer'])} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- evidence recall (no LLM: for tuning)

def run_evidence(a, items: Sequence[dict], k: int | None = None) -> dict:
    from .evidence import select_evidence

    rows = []
    for it in items:
        gs = golds(it)
        if not covered_of(it) or not gs or not any(g[2] for g in gs):
            continue
        ret = a.search(it["question"], k)
        ev = select_evidence(it["question"], ret.hits, a.embedder)
        rank = next((r for r, h in enumerate(ret.hits, 1) if chunk_is_gold(h.chunk, gs)), None)
        rows.append({"id": it["id"], "gold_rank": rank, "evidence_gold": evidence_has_gold(ev, gs),
                     "chars": sum(len(e.text) for e in ev)})
    retrieved = [r for r in rows if r["gold_rank"] is not None]
    return {"n": len(rows), "evidence_recall": _rate([r["evidence_gold"] for r in rows]),
            "evidence_recall_when_retrieved": _rate([r["evidence_gold"] for r in retrieved]),
            "hit@k": _rate([r["gold_rank"] is not None for r in rows]),
            "mean_chars": (sum(r["chars"] for r in rows) / len(rows)) if rows else 0.0, "items": rows}


# ---------------------------------------------------------------- abstain calibration

def abstain_rows(a, items: Sequence[dict], k: int | None = None, bar=None) -> list[dict]:
    """The four abstain signals of each question, the LLM judge included (one short scoring each)."""
    from . import prompts
    from .evidence import best_score, select_evidence

    rows = []
    for it in (bar(items) if bar else items):
        ret = a.search(it["question"], k)
        ev = select_evidence(it["question"], ret.hits, a.embedder) if ret.hits else []
        judge = a.judge(prompts.evidence_messages(it["question"], ev, ret.hits)) if ev else -10.0
        rows.append({"id": it["id"], "covered": covered_of(it), "x": [ret.best_coverage, ret.best_dense,
                                                                       best_score(ev), judge if judge is not None else 0.0]})
    return rows


def fit_abstain(model_id: str, rows: list[dict]) -> dict:
    """Cross-validated fits of feature subsets; the full model is saved, the others are for the report."""
    X, y = [r["x"] for r in rows], [r["covered"] for r in rows]
    subsets = {"retrieval only": [0, 1], "retrieval + evidence": [0, 1, 2], "judge only": [3], "all four": [0, 1, 2, 3]}
    report = {name: fit(model_id, X, y, used=used).cv for name, used in subsets.items()}
    cal = fit(model_id, X, y)
    return {"calibration": cal, "report": report, "features": list(FEATURES)}


# ---------------------------------------------------------------- entry (called by rag.evaluate.main)

def run_suite(suite: str, a, args, out, bar) -> tuple[dict, str]:
    """answers (rubric or keyword set, --set), evidence (tuning sets, no LLM), abstain (fit + save),
    mcq-judge (one true/false judgement per option)."""
    import json
    from pathlib import Path

    from .evaluate import data_dir, load_jsonl

    k = getattr(args, "k", None)
    if suite == "mcq-judge":
        from . import mcq_judge

        items = [i for i in load_jsonl(data_dir() / "mcq.jsonl") if not i.get("excluded")]
        if getattr(args, "limit", None):
            items = items[: args.limit]
        r = mcq_judge.run(a, items, k, bar)
        (out / "mcq_judge.md").write_text(mcq_judge.markdown(r), encoding="utf-8")
        (out / "mcq_judge.json").write_text(json.dumps(r, ensure_ascii=False, indent=1), encoding="utf-8")
        return r, (f"RAG {_pct(r['rag'])} (shuffled {_pct(r['rag_shuffled'])}), closed-book {_pct(r['closed'])}; "
                   f"negated stems {_pct(r['rag_negated'])}")
    if suite == "evidence":
        items = load_jsonl(data_dir() / "retrieval.jsonl") + load_jsonl(data_dir() / "answers.jsonl")
        r = run_evidence(a, items, k)
        (out / "evidence.md").write_text(
            f"# Evidence selection ({r['n']} answerable tuning questions with a gold text)\n\n"
            f"Share whose gold sentence is among the selected evidence: {_pct(r['evidence_recall'])} "
            f"({_pct(r['evidence_recall_when_retrieved'])} when the gold passage was retrieved; gold passage in top k: "
            f"{_pct(r['hit@k'])}). Mean evidence length {r['mean_chars']:.0f} characters.\n", encoding="utf-8")
        return r, f"evidence recall {_pct(r['evidence_recall'])}, mean {r['mean_chars']:.0f} chars"
    if suite == "abstain":
        items = load_jsonl(data_dir() / "retrieval.jsonl") + load_jsonl(data_dir() / "answers.jsonl")
        limit = getattr(args, "limit", None)
        inside = [i for i in items if covered_of(i) and i.get("kind") != "heading"]  # paraphrases: the hard case
        outside = [i for i in items if not covered_of(i)]
        # every unanswerable question and every 4th answerable paraphrase (about balanced; each costs
        # one prompt of LLM reading, 3-8 s here)
        chosen = outside + inside[::4]
        if limit:
            chosen = chosen[:limit]
        model = getattr(a.generator, "model_id", "?")
        rows = abstain_rows(a, chosen, k, bar)
        fitted = fit_abstain(model, rows)
        cal = fitted["calibration"]
        if not limit:
            cal.save()
        r = {"meta": {"model": model, "rows": len(rows), "saved": not limit}, "cv": fitted["report"],
             "calibration": cal.__dict__, "items": rows}
        lines = [f"# Abstain calibration ({len(rows)} tuning questions: {sum(x['covered'] for x in rows)} answerable)", "",
                 f"Generator `{model}`. 5-fold cross-validation; the threshold is chosen inside each training fold "
                 "(best F1 with ≤ 5% of answerable questions declined).", "",
                 "| signals | abstain precision | recall | F1 | answerable declined |", "|---|---|---|---|---|"]
        for name, cv in fitted["report"].items():
            lines.append(f"| {name} | {_pct(cv['precision'])} | {_pct(cv['recall'])} | {cv['f1']:.3f} | "
                         f"{_pct(cv['declined_answerable'])} |")
        lines += ["", f"Saved: weights {[round(w, 3) for w in cal.weights]} over {list(FEATURES)}, "
                      f"threshold P(covered) < {cal.threshold:.3f} declines."]
        (out / "abstain.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return r, f"cross-validated abstain F1 {fitted['report']['all four']['f1']:.3f}"
    path = Path(getattr(args, "set", None) or data_dir() / "answers.jsonl")
    items = load_jsonl(path)
    if getattr(args, "every", None):  # a spread subset: every n-th item
        items = items[:: args.every]
    if getattr(args, "limit", None):
        items = items[: args.limit]
    r = run(a, items, k, bar)
    style = a.settings.answer_style
    name = path.stem + ("" if style == "evidence" else f"_{style}") + (f"_every{args.every}" if getattr(args, "every", None) else "")
    (out / f"{name}.md").write_text(markdown(r, f"Answers: {path.name}"), encoding="utf-8")
    (out / f"{name}.json").write_text(json.dumps(r, ensure_ascii=False, indent=1), encoding="utf-8")
    summary = (f"correct {_pct(r['correct'])}, contradictions {_pct(r['contradiction_rate'])}, citation precision "
               f"{_pct(r['citation_precision'])}, abstain F1 {r['abstain']['f1']:.3f} "
               f"(declined answerable {_pct(r['abstain']['declined_answerable'])}), evidence recall "
               f"{_pct(r['evidence_recall'])}")
    return r, summary
