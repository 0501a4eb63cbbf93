"""Reports of `rag eval`: Markdown per suite, the one-line summaries, and the files under eval/results/
(<name>.md, <name>.json, plots; README.md with the headline numbers of whichever suites have results)."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import replace_text
from .metrics import OFF
from .mcq import letters
from .retrieval import MODES
from .suites import CORE


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def num(x, d=3) -> str:
    return "–" if x is None else ("off" if x >= OFF else f"{x:.{d}f}")


def cell(text: str, n: int) -> str:
    """One table cell: one line, pipes escaped, at most n characters."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= n else flat[: n - 1] + "…"


# ---------------------------------------------------------------- MCQ

def _mcq_head(r: dict) -> list[str]:
    m, h = r["meta"], r["headline"]
    cv, fx = h["cross_validated"], h["fixed_rule"]
    lead = ("cross-validated: these are the items the rule was chosen on, so each item is answered by the "
            "rule selected on the other items (leave-one-out)" if m["tuned_on"] else
            "the fixed rule, chosen beforehand on another set; nothing was tuned on these items")
    subset = f", every {m['every']}th item of `{m.get('set', 'mcq.jsonl')}`" if m.get("every") else ""
    return [f"# MCQ accuracy ({m['n_items']} scorable items{subset})", "",
            f"Generator `{m['model']}`, embedder `{m['embedder']}`. Exact match of the answer set; "
            f"{m['multi_answer']} multi-answer items, {m['negated']} negated stems; {m['excluded']} items excluded "
            f"by the data set. Wall time {m['seconds']:.0f} s.", "",
            "**How an item is answered.** One scoring pass per item. The evidence is shared by all options "
            f"(retrieved once for the question + all options, {m['k']} passages, the item's own text removed, "
            "cut to its best sentences). A negated stem (\"哪个不正确/不可取\") is asked in its positive form and "
            "the *worst* option is taken. Signals per option, each with the evidence and closed-book: `text` = "
            "log P(option text) as the answer, no option list shown; `judge` = log P(对) − log P(错) for \"is "
            "this candidate right?\", one option at a time; `letter-rot` = log P(letter) with the options listed, "
            "renormalised over the letters, averaged over every rotation of a canonical (text-sorted) order, so "
            "each option is seen at each position and the given order is never shown; `-lift` = with evidence "
            "minus closed-book (how "
            "much the notes move the reader). Signals are centred per item and scaled by their spread over the "
            "set (no labels), then summed. A single-answer item gets exactly one answer; a multi-answer item "
            "every option the judge calls right, at least two.", "",
            f"**Headline rule: `{h['rule']}`**, picked among the candidate rules below by leave-one-out "
            "cross-validation on the in-house set eval/mcq.jsonl"
            + (f" (picked per fold: {h['cv_picked']})" if m["tuned_on"] else
               f"; the leave-one-out row below re-runs that selection on these items, as a diagnostic "
               f"(picked per fold here: {h['cv_picked']})")
            + f". Headline numbers here: {lead}.", "",
            "| condition | original order | shuffled |", "|---|---|---|",
            f"| **RAG** (LLM + shared evidence) | **{pct(h['rag_original'])}** | **{pct(h['rag_shuffled'])}** |",
            f"| closed-book (same rule, no evidence; lift terms drop out) | {pct(h['closed_original'])} | "
            f"{pct(h['closed_shuffled'])} |",
            f"| the fixed rule `{h['rule']}` applied to all items (in-sample if tuned on) | "
            f"{pct(fx.get('rag/original'))} | {pct(fx.get('rag/shuffled'))} |",
            f"| leave-one-out selection among the candidates | {pct(cv.get('rag/original'))} | "
            f"{pct(cv.get('rag/shuffled'))} |",
            f"| logistic fit of {', '.join(h['logit_weights']) or 'the signals'} (leave-one-out; mean weights "
            f"{list(h['logit_weights'].values())}) | {pct(h['logit_cv'].get('rag/original'))} | "
            f"{pct(h['logit_cv'].get('rag/shuffled'))} |",
            f"| retrieval-only baseline (option/passage bigram overlap, single pick) | "
            f"{pct(h['retrieval_only_baseline'])} | – |",
            f"| chance (random answer set of the right size) | {pct(h['chance'])} | – |", "",
            f"RAG (headline rule, original order) on negated stems {pct(h['rag_negated'])}, on the others "
            f"{pct(h['rag_other'])}. The shuffled column is a second scoring pass with the options given in a "
            f"shuffled order (fixed seed, {m['shuffled_items']} items moved): no prompt shows the given order, so "
            "the judge and letter prompts are identical to the original pass's (their scores come from the "
            "cache) and only the text continuations are scored again, in the other order; largest difference "
            "from the original pass: " + ", ".join(f"{k} {v:.3f}" for k, v in m.get("order_difference", {}).items())
            + " nats (numerics of reused vs freshly computed KV caches).", ""]


def _mcq_variants(r: dict) -> list[str]:
    out = ["## Every candidate rule, in-sample (exact match; Jaccard in brackets)", "",
           "Choosing the best row of this table on the same items would overstate it; the headline above "
           "does not.", "", "| rule | RAG | RAG shuffled | closed-book | closed-book shuffled |", "|---|---|---|---|---|"]
    for rule in r["meta"]["candidates"]:
        cells = [f"{pct(r['variants'][f'{co}/{rule}']['exact'])} ({r['variants'][f'{co}/{rule}']['jaccard']:.2f})"
                 for co in ("rag/original", "rag/shuffled", "closed/original", "closed/shuffled")]
        bold = "**" if rule == r["meta"]["headline_rule"] else ""
        out.append(f"| {bold}{rule}{bold} | " + " | ".join(cells) + " |")
    return out


def _mcq_breakdown(r: dict) -> list[str]:
    out = ["", "## Breakdown (headline rule, original order)", "", "| group | n | RAG | closed-book | baseline |",
           "|---|---|---|---|---|"]
    for name in ("by_answer_size", "by_stem", "by_derived_from"):
        for g, v in r[name].items():
            out.append(f"| {g} | {v['n']} | {pct(v['rag'])} | {pct(v['closed'])} | {pct(v['baseline'])} |")
    out += ["", f"Gold explanation among the retrieved passages: {pct(r['explanation_retrieved_rate'])} of items "
            "that have one.", "", "## Position bias", "",
            f"Gold answers by position: {r['gold_positions']}.", ""]
    for co, counts in r["predicted_positions"].items():
        out.append(f"- predicted positions, {co}: {counts}")
    out += ["", "## Per item", "",
            "| id | question | gold | neg. | RAG | RAG shuf. | closed | baseline | RAG rule score per option | evidence |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for it in r["items"]:
        mark = lambda co: ("✓ " if it["correct"][co] else "✗ ") + (letters(it["pred"][co]) or "∅")  # noqa: E731
        sc = " ".join(f"{x:+.1f}" for x in it["rule_scores"]["rag/original"])
        out.append(f"| {it['id']} | {cell(it['question'], 40)} | {letters(it['gold'])} | "
                   f"{'yes' if it['negated'] else ''} | {mark('rag/original')} | {mark('rag/shuffled')} | "
                   f"{mark('closed/original')} | {letters(it['baseline']['pred'])} | {sc} | "
                   f"{cell(it['evidence'] or '–', 80)} |")
    return out


def mcq_markdown(r: dict) -> str:
    return "\n".join(_mcq_head(r) + _mcq_variants(r) + _mcq_breakdown(r)) + "\n"


def mcq_judge_markdown(r: dict) -> str:
    m = r["meta"]
    out = [f"# MCQ, one judgement per option ({m['n_items']} items, {m['negated']} with a negated stem)", "",
           f"Generator `{m['model']}`; `rag eval mcq-judge`; {m['seconds']:.0f} s.", "",
           "| condition | original order | shuffled order |", "|---|---|---|",
           f"| evidence per option (RAG) | {pct(r['rag'])} | {pct(r['rag_shuffled'])} |",
           f"| closed-book | {pct(r['closed'])} | {pct(r['closed_shuffled'])} |", "",
           f"RAG on negated stems {pct(r['rag_negated'])}, on the others {pct(r['rag_other'])}.", "",
           "| id | gold | RAG pred | closed pred | negated | RAG log-odds per option |", "|---|---|---|---|---|---|"]
    for it in r["items"]:
        out.append(f"| {it['id']} | {letters(it['gold'])} | {letters(it['rag']['pred'])}"
                   f"{' ✓' if it['rag']['correct'] else ''} | {letters(it['closed']['pred'])} | "
                   f"{'yes' if it['negated'] else ''} | {' '.join(f'{s:+.1f}' for s in it['rag']['scores'])} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- retrieval

def _abstain_section(r: dict) -> list[str]:
    ab = r["abstain"]
    out = ["", "## Abstaining on out-of-corpus questions", "",
           "Positive class = out-of-corpus question; the retriever answers when the best keyword hit covers "
           ">= COVERAGE_THRESHOLD of the query's IDF mass or the best dense cosine >= DENSE_THRESHOLD.", "",
           "| setting | coverage | dense | precision | recall | F1 | TP/FP/FN/TN |", "|---|---|---|---|---|---|---|"]
    for name, s in (("current constants", ab["current"]), ("best F1 (both)", ab["best"]),
                    ("best F1, coverage only", ab["best_coverage_only"]), ("best F1, dense only", ab["best_dense_only"])):
        out.append(f"| {name} | {num(s['coverage'], 3)} | {num(s['dense'], 2)} | {pct(s['precision'])} | "
                   f"{pct(s['recall'])} | {s['f1']:.3f} | {s['tp']}/{s['fp']}/{s['fn']}/{s['tn']} |")
    cv = ab["cross_validated_f1"]
    out += ["", f"Thresholds tuned on this set overstate F1; repeated 2-fold cross-validation (tune on one half, "
            f"test on the other, {cv['folds']} folds): mean F1 {cv['mean_f1']:.3f} "
            f"(min {cv['min_f1']:.3f}, max {cv['max_f1']:.3f}).", "", "### Calibration: coverage only (dense off)", "",
            "| coverage | precision | recall | F1 |", "|---|---|---|---|"]
    out += [f"| {s['coverage']} | {pct(s['precision'])} | {pct(s['recall'])} | {s['f1']:.3f} |" for s in ab["coverage_table"]]
    out += ["", "### Calibration: dense only (coverage off)", "", "| dense | precision | recall | F1 |", "|---|---|---|---|"]
    out += [f"| {s['dense']} | {pct(s['precision'])} | {pct(s['recall'])} | {s['f1']:.3f} |" for s in ab["dense_table"]]
    out += ["", "### Signal distributions", "", "| questions | signal | min | p10 | p50 | p90 | max |",
            "|---|---|---|---|---|---|---|"]
    for kind, sigs in ab["signal_quantiles"].items():
        for sig, q in sigs.items():
            out.append(f"| {kind} | {sig} | " + " | ".join(num(q.get(x)) for x in ("min", "p10", "p50", "p90", "max")) + " |")
    return out


def retrieval_markdown(r: dict) -> str:
    m = r["meta"]
    out = [f"# Retrieval{' on ' + m['set'] if m.get('set') else ''} ({m['n_items']} questions: {m['kinds']})", "",
           f"Embedder `{m['embedder']}`, {m['chunks']} chunks. A hit is a retrieved chunk from the gold source "
           "(or an alternative gold) whose text contains `gold_contains` or whose question heading matches "
           f"`gold_heading`. Wall time {m['seconds']:.1f} s.", "",
           "| retriever | questions | n | hit@1 | hit@5 | MRR@5 |", "|---|---|---|---|---|---|"]
    for key, v in r["table"].items():
        mode, group = key.split("/", 1)
        out.append(f"| {mode} | {group} | {v['n']} | {pct(v['hit@1'])} | {pct(v['hit@5'])} | {num(v['mrr@5'])} |")
    if m["unreachable"]:
        out += ["", f"Gold unreachable in this index (no chunk satisfies the hit rule): {', '.join(m['unreachable'])}."]
    out += _abstain_section(r)
    misses = [it for it in r["items"] if it["kind"] == "paraphrase" and (it["ranks"]["hybrid"] or 99) > 5]
    out += ["", f"## Paraphrase misses, hybrid (gold not in top 5): {len(misses)}", "",
            "| id | question | gold rank (dense/bm25/hybrid) | hybrid top 1 |", "|---|---|---|---|"]
    for it in misses:
        rk = "/".join(str(it["ranks"][mo] or "–") for mo in MODES)
        out.append(f"| {it['id']} | {cell(it['question'], 50)} | {rk} | {cell(it['top1'], 50)} |")
    wrong = [it for it in r["items"] if (it["kind"] == "out_of_corpus") == it["covered"]]
    out += ["", f"## Abstain errors at the current constants: {len(wrong)}", "",
            "| id | kind | question | coverage | dense |", "|---|---|---|---|---|"]
    for it in wrong:
        out.append(f"| {it['id']} | {it['kind']} | {cell(it['question'], 50)} | {it['best_coverage']:.3f} | "
                   f"{it['best_dense']:.3f} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- answers

def answers_markdown(r: dict) -> str:
    m = r["meta"]
    g, gm = r["abstain_gate"], r["abstain_gate_or_model"]
    out = [f"# Free-form answers ({m['n_items']} questions: {m['in_corpus']} in corpus, {m['out_of_corpus']} not)", "",
           f"Generator `{m['model']}`, embedder `{m['embedder']}`, k={m['k']}. Wall time {m['seconds']:.0f} s.", "",
           "| metric | value |", "|---|---|",
           f"| citation precision (cited passage holds the gold text / sits under the gold question) | "
           f"{pct(r['citation_precision'])} of {r['citations']} citations |",
           f"| citation precision, source file only | {pct(r['citation_precision_source_only'])} |",
           f"| in-corpus answers citing a gold passage | {pct(r['answers_with_gold_citation'])} |",
           f"| in-corpus answers with no citation (not abstained) | {r['answers_without_citation']} |",
           f"| gold passage among the retrieved (in corpus) | {pct(r['gold_retrieved@k'])} |",
           f"| keyword recall (reference keywords in the answer; abstained = 0) | {pct(r['keyword_recall'])} |",
           f"| abstain P / R / F1 (retrieval gate) | {pct(g['precision'])} / {pct(g['recall'])} / {g['f1']:.3f} |",
           f"| abstain P / R / F1 (gate, or the model says the passages do not cover it) | {pct(gm['precision'])} / "
           f"{pct(gm['recall'])} / {gm['f1']:.3f} |", "",
           "| id | in corpus | abstained | citations (✓ = gold) | keyword recall | s | answer |",
           "|---|---|---|---|---|---|---|"]
    for it in r["items"]:
        cites = " ".join(f"{'✓' if c['gold'] else '✗'}{c['source']}:{c['line']}" for c in it["cited"]) or "–"
        ab = "gate" if it["abstained"] else ("model" if it["model_abstained"] else "")
        out.append(f"| {it['id']} | {'yes' if it['in_corpus'] else 'no'} | {ab} | {cites} | {pct(it['keyword_recall'])} | "
                   f"{it['seconds']:.1f} | {cell(it['answer'], 80)} |")
    return "\n".join(out) + "\n"


def _verdict(it: dict) -> str:
    if not it["covered"]:
        return "declined ✓" if it["abstained"] else "answered ✗"
    if it["abstained"]:
        return "declined ✗"
    if "correct" not in it:
        return "answered"
    if it["correct"]:
        return "correct"
    return "CONTRADICTION" if it["contradiction"] else f"missing {sum(not f for f in it['facts'])} fact(s)"


def rubric_markdown(r: dict, title: str) -> str:
    m, ab = r["meta"], r["abstain"]
    mrr = "–" if r["mrr@5"] is None else f"{r['mrr@5']:.3f}"
    out = [f"# {title} ({m['n_items']} questions: {m['answerable']} answerable, {m['not_covered']} not covered)", "",
           f"Generator `{m['model']}`, embedder `{m['embedder']}`, k={m['k']}, answer style `{m['answer_style']}`. "
           f"Wall time {m['seconds']:.0f} s.", "",
           "| metric | value |", "|---|---|",
           f"| answers correct (all must-facts, no must-not; of answerable) | {pct(r['correct'])} |",
           f"| correct when answered | {pct(r['correct_when_answered'])} |",
           f"| contradictions (a must-not phrase in an answer) | {pct(r['contradiction_rate'])} |",
           f"| citation precision (cited passage holds the gold text) | {pct(r['citation_precision'])} of {r['citations']} |",
           f"| evidence recall (a selected sentence holds the gold text) | {pct(r['evidence_recall'])} |",
           f"| gold passage retrieved in top 5 / MRR@5 | {pct(r['hit@5'])} / {mrr} |",
           f"| abstain P / R / F1 | {pct(ab['precision'])} / {pct(ab['recall'])} / {ab['f1']:.3f} |",
           f"| answerable questions declined | {pct(ab['declined_answerable'])} |",
           f"| evidence on screen p50 / first token p50, p95 (s) | {r['evidence_shown_p50'] or 0:.3f} / "
           f"{r['first_token_p50'] or 0:.1f}, {r['first_token_p95'] or 0:.1f} |", "",
           "By kind: " + "; ".join(f"{k or '-'} n={v['n']} correct {pct(v['correct'])} declined {pct(v['abstained'])}"
                                   for k, v in r["by_kind"].items()), "",
           "| id | covered | verdict | P(covered) | gold rank | evidence ✓ | check | answer |", "|---|---|---|---|---|---|---|---|"]
    for it in r["items"]:
        p = "–" if it["p_covered"] is None else f"{it['p_covered']:.2f}"
        ev = "–" if it["evidence_gold"] is None else ("✓" if it["evidence_gold"] else "✗")
        out.append(f"| {it['id']} | {'yes' if it['covered'] else 'no'} | {_verdict(it)} | {p} | {it['gold_rank'] or '–'} | "
                   f"{ev} | {cell(it['verification'], 30) or ''} | {cell(it['answer'], 80)} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- tuning suites

def evidence_markdown(r: dict) -> str:
    return (f"# Evidence selection ({r['n']} answerable tuning questions with a gold text)\n\n"
            f"Share whose gold sentence is among the selected evidence: {pct(r['evidence_recall'])} "
            f"({pct(r['evidence_recall_when_retrieved'])} when the gold passage was retrieved; gold passage in top k: "
            f"{pct(r['hit@k'])}). Mean evidence length {r['mean_chars']:.0f} characters. The quoted sentence (the "
            f"best-scored one) holds the gold text for {pct(r.get('quote_gold'))}.\n")


def abstain_markdown(r: dict) -> str:
    rows, cal = r["items"], r["calibration"]
    lines = [f"# Abstain calibration ({len(rows)} tuning questions: {sum(x['covered'] for x in rows)} answerable)", "",
             f"Generator `{r['meta']['model']}`. 5-fold cross-validation; the threshold is chosen inside each training "
             "fold (best F1 with ≤ 5% of answerable questions declined).", "",
             "| signals | abstain precision | recall | F1 | answerable declined |", "|---|---|---|---|---|"]
    for name, cv in r["cv"].items():
        lines.append(f"| {name} | {pct(cv['precision'])} | {pct(cv['recall'])} | {cv['f1']:.3f} | "
                     f"{pct(cv['declined_answerable'])} |")
    lines += ["", f"Saved: weights {[round(w, 3) for w in cal['weights']]} over {r['features']}, "
                  f"threshold P(covered) < {cal['threshold']:.3f} declines."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- files and one-line summaries

def summary(kind: str, r: dict) -> str:
    """The line `rag eval` prints for a suite."""
    if kind == "mcq":
        h, c = r["headline"], r["meta"].get("score_cache") or {}
        s = (f"RAG {pct(h['rag_original'])} (shuffled {pct(h['rag_shuffled'])}), closed-book "
             f"{pct(h['closed_original'])} (shuffled {pct(h['closed_shuffled'])}), retrieval-only "
             f"{pct(h['retrieval_only_baseline'])}, chance {pct(h['chance'])} [rule {h['rule']}, {h['source']}]")
        if c.get("from_disk"):
            s += f" [{c['from_disk']} of {c['from_disk'] + c['scored'] + c['repeated']} LLM scorings from the cache]"
        return s
    if kind == "retrieval":
        t, ab = r["table"], r["abstain"]
        return ("paraphrase hit@5 " + " ".join(f"{mo} {pct(t[f'{mo}/paraphrase']['hit@5'])}" for mo in MODES)
                + f"; MRR@5 hybrid {num(t['hybrid/paraphrase']['mrr@5'])}; abstain F1 {ab['current']['f1']:.3f} "
                f"(best {ab['best']['f1']:.3f} at coverage {num(ab['best']['coverage'])}, dense {num(ab['best']['dense'], 2)})")
    if kind == "answers":
        return (f"citation precision {pct(r['citation_precision'])}, keyword recall {pct(r['keyword_recall'])}, "
                f"abstain F1 {r['abstain_gate']['f1']:.3f}")
    if kind == "rubric":
        return (f"correct {pct(r['correct'])}, contradictions {pct(r['contradiction_rate'])}, citation precision "
                f"{pct(r['citation_precision'])}, abstain F1 {r['abstain']['f1']:.3f} (declined answerable "
                f"{pct(r['abstain']['declined_answerable'])}), evidence recall {pct(r['evidence_recall'])}")
    if kind == "evidence":
        return (f"evidence recall {pct(r['evidence_recall'])}, quoted sentence holds the gold {pct(r.get('quote_gold'))}, "
                f"mean {r['mean_chars']:.0f} chars")
    if kind == "abstain":
        return f"cross-validated abstain F1 {r['cv']['all five (+ unseen terms)']['f1']:.3f}"
    if kind == "mcq-judge":
        return (f"RAG {pct(r['rag'])} (shuffled {pct(r['rag_shuffled'])}), closed-book {pct(r['closed'])}; "
                f"negated stems {pct(r['rag_negated'])}")
    raise ValueError(f"unknown suite kind {kind!r}")


def write(out: Path, result) -> list[Path]:
    """A suite's files in `out` (a `suites.Result`): Markdown, its plot, and the JSON the summary and
    later comparisons read (evidence and abstain write Markdown only)."""
    from . import plots

    kind, r, name = result.kind, result.data, result.name
    markdown = {"mcq": mcq_markdown, "retrieval": retrieval_markdown, "answers": answers_markdown,
                "rubric": lambda r: rubric_markdown(r, result.title), "evidence": evidence_markdown,
                "abstain": abstain_markdown, "mcq-judge": mcq_judge_markdown}[kind]
    files = [out / f"{name}.md"]
    replace_text(files[0], markdown(r))
    plot = {"mcq": (plots.plot_mcq, f"{name}_by_category.png"), "retrieval": (plots.plot_retrieval, f"{name}_hit_at_k.png")}
    if kind in plot:
        draw, png = plot[kind]
        draw(r, out / png)
        files.append(out / png)
    if kind not in ("evidence", "abstain"):
        files.append(out / f"{name}.json")
        replace_text(files[-1], json.dumps(r, ensure_ascii=False, indent=1))
    return files


def _index_line(suite: str, r: dict) -> str:
    m = r["meta"]
    if suite == "mcq":
        h = r["headline"]
        return (f"- [MCQ](mcq.md) ({m['n_items']} items, rule `{h['rule']}`, {h['source']}): RAG {pct(h['rag_original'])} "
                f"(shuffled {pct(h['rag_shuffled'])}), closed-book {pct(h['closed_original'])}, "
                f"retrieval-only {pct(h['retrieval_only_baseline'])}, chance {pct(h['chance'])}; {m['seconds']:.0f} s")
    if suite == "retrieval":
        t, ab = r["table"], r["abstain"]
        return (f"- [Retrieval](retrieval.md) (`{m['embedder']}`): paraphrase hit@5 dense/bm25/hybrid "
                + "/".join(pct(t[f'{mo}/paraphrase']['hit@5']) for mo in MODES)
                + ", MRR@5 " + "/".join(num(t[f'{mo}/paraphrase']['mrr@5']) for mo in MODES)
                + f"; abstain F1 {ab['current']['f1']:.3f} at the current thresholds, {ab['best']['f1']:.3f} best "
                f"(cross-validated {ab['cross_validated_f1']['mean_f1']:.3f}); {m['seconds']:.0f} s")
    return (f"- [Answers](answers.md) ({m['n_items']} questions): citation precision "
            f"{pct(r['citation_precision'])}, keyword recall {pct(r['keyword_recall'])}, "
            f"abstain F1 {r['abstain_gate']['f1']:.3f} (gate) / {r['abstain_gate_or_model']['f1']:.3f} "
            f"(gate or model); {m['seconds']:.0f} s")


def write_index(out: Path) -> Path:
    """README.md: the headline numbers of whichever core suites have results in `out`."""
    lines = ["# Evaluation results", "", "Generated by `rag eval`; details in the per-suite reports.", ""]
    for suite in CORE:
        p = out / f"{suite}.json"
        if p.exists():
            lines.append(_index_line(suite, json.loads(p.read_text(encoding="utf-8"))))
    path = out / "README.md"
    replace_text(path, "\n".join(lines) + "\n")
    return path
