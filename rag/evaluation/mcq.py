"""`rag eval mcq`: the multiple-choice file scored by option likelihood.

Each option is scored by its log-likelihood as the answer under the LLM (with retrieved passages, and
closed-book), normalised three ways (sum, per-token mean, PMI against the option's unconditional
likelihood); a fixed gap rule turns scores into an answer set. Options are also shuffled (fixed seed)
to expose position bias. `rag eval mcq-judge` (mcq_judge.py) judges each option alone instead.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter, defaultdict
from typing import Callable, Iterable, Sequence

from .cache import ScoreCache
from .data import each, normalize
from .metrics import GAP_RATIO, chance_exact, decide, exact_match, jaccard, tie_break_expectation

LETTERS = "ABCDEFGHIJ"
MCQ_K = 3  # passages per MCQ prompt (short prompts: prompt evaluation dominates the run time)
SHUFFLE_SEED = 20261123
# What is scored as the answer: the option's text, or its letter alone. Asked for the content, the
# 1.5B model still answers "B. text": it decides at the letter (one token: no decoding beyond the
# prompt, and its PMI removes the model's prior for letters, i.e. position bias).
FORMATS = ("text", "letter")
NORMS = ("sum", "mean", "pmi")
SCORINGS = tuple(f"{f}-{n}" for f in FORMATS for n in NORMS)
# Chosen by numbers on this same data (eval/results/mcq.md, "Scoring variants"): with the gap rule,
# RAG text-sum 50% / 41% shuffled vs letter-sum and letter-pmi 41% / 31%, text-mean 16% (a per-token
# gap of ln 2 admits almost everything), text-pmi 34% / 34%.
HEADLINE_SCORING = "text-sum"
CONDITIONS = ("rag/original", "rag/shuffled", "closed/original", "closed/shuffled")
CONTENT_FREE = "N/A"
# Options that point at other options ("以上都不正确", "选项A和B") keep their position when shuffling.
_POSITIONAL = re.compile(r"以上|上述|都|均|全部|所有|选项\s*[A-J]|[A-J]\s*[和与、,，]\s*[A-J]|all of the above|none of",
                         re.IGNORECASE)
_LETTER_REF = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")


def letters(idx: Iterable[int]) -> str:
    return "".join(LETTERS[i] for i in sorted(idx))


def shuffle_options(options: Sequence[str], answer: Sequence[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """A permutation `perm` (new position -> old index) and the remapped answer.

    Options that refer to other options ("以上都对", "选项A和B") stay where they are, and so do the
    options they name by letter; the rest are shuffled among their own positions."""
    pinned = set()
    for i, o in enumerate(options):
        if _POSITIONAL.search(o):
            pinned.add(i)
            pinned.update(LETTERS.index(x) for x in _LETTER_REF.findall(o) if LETTERS.index(x) < len(options))
    free = [i for i in range(len(options)) if i not in pinned]
    moved = free[:]
    rng.shuffle(moved)
    perm = list(range(len(options)))
    for pos, old in zip(free, moved):
        perm[pos] = old
    new_answer = sorted(perm.index(a) for a in answer)
    return perm, new_answer


def messages(question: str, options: Sequence[str], passages: str | None) -> list[dict]:
    from .. import prompts

    context = prompts.MCQ_CONTEXT.format(passages=passages) if passages else ""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return [{"role": "user", "content": prompts.MCQ_USER.format(context=context, question=question, options=opts)}]


def continuations(options: Sequence[str], fmt: str, delimiter: str = "") -> list[str]:
    return [delimiter + (o if fmt == "text" else LETTERS[i]) for i, o in enumerate(options)]


def split_prefix(prefix: str) -> tuple[str, str]:
    """("正确答案是:", " ") from "正确答案是: ". BPE merges a space into the following word, so a prompt
    ending in a lone space token makes every continuation unlikely (letters scored -10..-16 instead
    of -0.6..-3): the space goes at the start of each continuation instead."""
    stem = prefix.rstrip()
    return stem, prefix[len(stem):]


def _variants(fmt: str, raw: list[tuple[float, int]], uncond: list[float]) -> dict[str, list[float]]:
    return {f"{fmt}-sum": [s for s, _ in raw], f"{fmt}-mean": [s / max(n, 1) for s, n in raw],
            f"{fmt}-pmi": [s - u for (s, _), u in zip(raw, uncond)]}


def _strip_item(text: str, question: str, options: Sequence[str]) -> str:
    """Passage text without the question and option strings themselves (the MCQ file is in the corpus,
    so every option occurs verbatim next to its question; only the explanation is evidence).
    The option block is the first run of >= 2 lines that are options; later mentions stay."""
    for s in sorted([question, *question.splitlines()], key=len, reverse=True):
        if len(s.strip()) >= 2:
            text = text.replace(s.strip(), " ")
    wanted = {normalize(o) for o in options if o.strip()}
    lines = text.split("\n")
    is_opt = [normalize(re.sub(r"^\s*[-*•]\s*", "", line)) in wanted for line in lines]
    for i in range(len(lines)):
        j = i
        while j < len(lines) and is_opt[j]:
            j += 1
        if j - i >= min(2, len(wanted)):
            return "\n".join(lines[:i] + lines[j:])
    return text


def lexical_option_scores(options: Sequence[str], question: str, passages: Sequence[str]) -> list[float]:
    """Retrieval-only baseline: share of an option's character bigrams found in the passages."""
    from ..citations import support

    evidence = "\n".join(_strip_item(p, question, options) for p in passages)
    return [support(o, evidence) if o.strip() else 0.0 for o in options]


def explanation_retrieved(explanation: str, chunks: Sequence) -> bool | None:
    from ..citations import support

    head = " ".join(explanation.split())[:120]
    if len(head) < 4:
        return None
    return any(support(head, c.text) >= 0.6 for c in chunks)


# ---------------------------------------------------------------- the suite

class _Scorer:
    """Option scores from the LLM through the cache, with each continuation's content-free likelihood."""

    def __init__(self, gen, cache: ScoreCache, items: Sequence[dict], orders: dict):
        from .. import prompts

        self.gen, self.cache = gen, cache
        self.prefix, self.delim = split_prefix(prompts.MCQ_ANSWER_PREFIX)
        # Likelihood of every continuation without content, for PMI: the same template with the question
        # and n options replaced by "N/A" (content-free input, as in contextual calibration). For letters
        # this is the model's prior for each position given n options; for texts, the prior of the string.
        by_n: dict[int, set[str]] = defaultdict(set)
        for it in items:
            for o_list in (it["options"], [it["options"][j] for j in orders[it["id"]][0]]):
                for fmt in FORMATS:
                    by_n[len(o_list)].update(continuations(o_list, fmt, self.delim))
        self.uncond: dict[tuple[int, str], float] = {}
        for n, conts in sorted(by_n.items()):
            conts = sorted(conts)
            raw = cache.score(gen, messages(CONTENT_FREE, [CONTENT_FREE] * n, None), self.prefix, conts)
            self.uncond.update({(n, c): s for c, (s, _) in zip(conts, raw)})

    def scores(self, question: str, options: Sequence[str], passages: str | None) -> dict:
        entry = {}
        for fmt in FORMATS:
            conts = continuations(options, fmt, self.delim)
            raw = self.cache.score(self.gen, messages(question, options, passages), self.prefix, conts)
            entry[f"raw-{fmt}"] = raw
            entry.update(_variants(fmt, raw, [self.uncond[(len(conts), c)] for c in conts]))
        return entry


def _score_item(it: dict, retriever, scorer: _Scorer, order: tuple[list[int], list[int]], k: int) -> dict:
    from .. import prompts

    t0 = time.perf_counter()
    q, opts, gold = it["question"], it["options"], it["answer"]
    hits = retriever.search(q + "\n" + "\n".join(opts), k, mode="hybrid").hits
    passages = prompts.format_passages(hits)
    perm, shuffled_gold = order
    shuffled = [opts[j] for j in perm]
    row = {"id": it["id"], "category": it.get("category", []), "derived_from": it.get("derived_from"),
           "question": q, "options": opts, "gold": sorted(gold), "n_options": len(opts),
           "perm": perm, "shuffled_gold": shuffled_gold,
           "passages": [{"source": h.chunk.source, "line": h.chunk.line, "heading": h.chunk.heading,
                         "text": h.chunk.text[:160]} for h in hits],
           "explanation_retrieved": explanation_retrieved(it.get("explanation") or "", [h.chunk for h in hits]),
           "scores": {}}
    # Calls sharing a prompt prefix run back to back (the generator reuses its KV cache).
    for cond, ctx in (("rag", passages), ("closed", None)):
        for order_name, o_list in (("original", opts), ("shuffled", shuffled)):
            entry = row["scores"][f"{cond}/{order_name}"] = scorer.scores(q, o_list, ctx)
            if order_name == "shuffled":  # every list back to the original option order
                for key, vals in entry.items():
                    back = [None] * len(opts)
                    for pos, old in enumerate(perm):
                        back[old] = vals[pos]
                    entry[key] = back
    lex = lexical_option_scores(opts, q, [h.chunk.text for h in hits])
    row["baseline"] = {"scores": lex, "expected_exact": tie_break_expectation(lex, gold),
                       "pred": [max(range(len(lex)), key=lambda i: lex[i])]}
    row["chance"] = chance_exact(len(opts), len(gold))
    row["seconds"] = time.perf_counter() - t0
    return row


def run(a, items: Sequence[dict], cache: ScoreCache, k: int | None = None, excluded: int = 0) -> dict:
    """Score the (scorable) items; `excluded`: how many the data set left out, for the report."""
    from ..retriever import Retriever

    k = k or MCQ_K
    gen = a.generator
    retriever = Retriever(a.index(), a.embedder, candidates=a.settings.candidates, rrf_k=a.settings.rrf_k)
    orders = {it["id"]: shuffle_options(it["options"], it["answer"], random.Random(f"{SHUFFLE_SEED}:{it['id']}"))
              for it in items}
    scorer = _Scorer(gen, cache, items, orders)
    t_start = time.perf_counter()
    rows = [_score_item(it, retriever, scorer, orders[it["id"]], k) for it in each(items, a.progress, "mcq")]
    return summarize(rows, unconditional_continuations=len(scorer.uncond), k=k, excluded=excluded,
                     seconds=time.perf_counter() - t_start, model=getattr(gen, "model_id", "?"),
                     embedder=a.settings.embedder)


# ---------------------------------------------------------------- summary (no model calls: re-runnable on saved rows)

def _accuracy(rows: list[dict], cond_order: str, scoring: str, ratio: float) -> dict:
    n = len(rows)
    em, jac = 0, 0.0
    for r in rows:
        pred = decide(r["scores"][cond_order][scoring], ratio)
        em += exact_match(pred, r["gold"])
        jac += jaccard(pred, r["gold"])
    return {"exact": em / n if n else 0.0, "jaccard": jac / n if n else 0.0, "correct": em}


def _group_accuracy(rows: list[dict], key: Callable[[dict], Iterable[str]]) -> dict:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        for g in key(r):
            groups[g].append(r)
    return {g: {"n": len(rs), "ids": [r["id"] for r in rs],
                "rag": sum(r["correct"]["rag/original"] for r in rs) / len(rs),
                "closed": sum(r["correct"]["closed/original"] for r in rs) / len(rs),
                "baseline": sum(r["baseline"]["expected_exact"] for r in rs) / len(rs)}
            for g, rs in sorted(groups.items())}


def _positions(rows: list[dict]) -> dict:
    """How often each letter was predicted, by the position shown to the model."""
    position = {}
    for co in CONDITIONS:
        counts: Counter = Counter()
        for r in rows:
            pred = r["pred"][co]
            if co.endswith("shuffled"):  # position shown to the model
                pred = [r["perm"].index(i) for i in pred]
            counts.update(LETTERS[i] for i in pred)
        position[co] = dict(sorted(counts.items()))
    return position


def summarize(rows: list[dict], **meta) -> dict:
    """Accuracy tables from per-item option scores."""
    n = len(rows)
    variants = {f"{co}/{sc}/{rule}": _accuracy(rows, co, sc, ratio)
                for co in CONDITIONS for sc in SCORINGS for rule, ratio in (("top1", 1.0), ("gap", GAP_RATIO))}
    sensitivity = {f"{co}/{sc}": {str(ratio): _accuracy(rows, co, sc, ratio)["exact"]
                                  for ratio in (1.0, 0.75, 0.5, 0.25, 0.1)}
                   for co in ("rag/original", "closed/original") for sc in SCORINGS}
    for r in rows:
        for co in CONDITIONS:
            pred = decide(r["scores"][co][HEADLINE_SCORING])
            r.setdefault("pred", {})[co] = pred
            r.setdefault("correct", {})[co] = exact_match(pred, r["gold"])
    head = f"{HEADLINE_SCORING}/gap"
    headline = {
        "rag_original": variants[f"rag/original/{head}"]["exact"],
        "rag_shuffled": variants[f"rag/shuffled/{head}"]["exact"],
        "closed_original": variants[f"closed/original/{head}"]["exact"],
        "closed_shuffled": variants[f"closed/shuffled/{head}"]["exact"],
        "retrieval_only_baseline": sum(r["baseline"]["expected_exact"] for r in rows) / n if n else 0.0,
        "chance": sum(r["chance"] for r in rows) / n if n else 0.0,
    }
    expl = [r for r in rows if r["explanation_retrieved"] is not None]
    return {
        "meta": {**meta, "n_items": n, "multi_answer": sum(len(r["gold"]) > 1 for r in rows),
                 "headline_scoring": HEADLINE_SCORING, "gap_ratio": GAP_RATIO, "shuffle_seed": SHUFFLE_SEED,
                 "shuffled_items": sum(r["perm"] != list(range(len(r["perm"]))) for r in rows)},
        "headline": headline,
        "variants": variants,
        "gap_sensitivity": sensitivity,
        "by_category": _group_accuracy(rows, lambda r: r["category"] or ["(none)"]),
        "by_derived_from": _group_accuracy(rows, lambda r: [r["derived_from"] or "?"]),
        "by_answer_size": _group_accuracy(rows, lambda r: ["single" if len(r["gold"]) == 1 else "multi"]),
        "by_explanation_retrieved": _group_accuracy(rows, lambda r: [{True: "retrieved", False: "not retrieved",
                                                                     None: "no explanation"}[r["explanation_retrieved"]]]),
        "explanation_retrieved_rate": (sum(bool(r["explanation_retrieved"]) for r in expl) / len(expl)) if expl else None,
        "predicted_positions": _positions(rows),
        "gold_positions": dict(sorted(Counter(LETTERS[i] for r in rows for i in r["gold"]).items())),
        "items": rows,
    }
