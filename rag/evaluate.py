"""`rag eval`: accuracy report built from the corpus' own questions (eval/*.jsonl).

Suites
- mcq: the 36-question multiple-choice file. Each option is scored by its log-likelihood as the
  answer under the LLM (with retrieved passages, and closed-book), normalised three ways (sum,
  per-token mean, PMI against the option's unconditional likelihood); a fixed gap rule turns
  scores into an answer set. Options are also shuffled (fixed seed) to expose position bias.
- retrieval: hit@k / MRR@5 per retriever on heading and paraphrased questions, and the abstain
  decision (out-of-corpus questions) with a sweep of the retriever's two thresholds.
- answers: free-form answers: citation precision, keyword recall, abstain precision/recall/F1.

Unless --index-dir (or RAG_INDEX_DIR) is given, the suites run on a throwaway index built from the
corpus in a temporary directory, so the numbers describe the current code, corpus and --embedder,
never a stale ./index, and the user's index is not touched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import RagError

LETTERS = "ABCDEFGHIJ"
SUITES = ("mcq", "retrieval", "answers")
EXTRA_SUITES = ("evidence", "abstain", "mcq-judge")  # rag.answer_suite; run by name only
MODES = ("dense", "bm25", "hybrid")
MAX_K = 10  # depth of the hit@k curve
MCQ_K = 3  # passages per MCQ prompt (short prompts: prompt evaluation dominates the run time)
SHUFFLE_SEED = 20261123
# Multi-answer rule, fixed before looking at results: every option whose softmax share is at least
# half the best one's (score within ln 2 of the best). A model that spreads its mass evenly over m
# correct options puts each at 1/m, so all of them pass while a clear single answer stays alone.
GAP_RATIO = 0.5
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
SCORE_CACHE_VERSION = 1
CONTENT_FREE = "N/A"
OFF = 2.0  # a threshold no coverage share or cosine reaches: that signal never vouches for coverage
# Options that point at other options ("以上都不正确", "选项A和B") keep their position when shuffling.
_POSITIONAL = re.compile(r"以上|上述|都|均|全部|所有|选项\s*[A-J]|[A-J]\s*[和与、,，]\s*[A-J]|all of the above|none of",
                         re.IGNORECASE)
_LETTER_REF = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")
_MODEL_ABSTAINS = re.compile(r"没有相关内容|没有找到|无法回答|未提及|没有提到|do(?:es)? not (?:cover|mention|contain)",
                             re.IGNORECASE)


# ---------------------------------------------------------------- pure scoring rules (unit-tested)

def softmax(scores: Sequence[float]) -> list[float]:
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    z = sum(e)
    return [x / z for x in e]


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


def hit_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


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


def normalize(text: str | None) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return re.sub(r"[\s*`#]+", "", text)


def heading_key(heading: str | None) -> str:
    """The question part of a chunk heading: section prefix ("CNN问题 · ") and labels ("[BN] ") dropped."""
    h = (heading or "").split(" · ")[-1]
    h = re.sub(r"^\s*(?:\[[^\]]*\]\s*)+", "", h)
    return normalize(h).strip("?？。.:：!！")


def heading_matches(chunk_heading: str, gold_heading: str | None) -> bool:
    a, b = heading_key(chunk_heading), heading_key(gold_heading)
    if not b:
        return False
    # Stray markup before the question number ("W 什么是多任务学习？") survives in some headings.
    return a == b or (len(b) >= 6 and a.endswith(b))


def golds_of(item: dict) -> list[tuple[str, str | None, str | None]]:
    golds = [(item.get("source"), item.get("gold_heading"), item.get("gold_contains"))]
    golds += [(g["source"], g.get("gold_heading"), g.get("gold_contains")) for g in item.get("alt_golds") or []]
    return [g for g in golds if g[0]]


def is_gold(chunk, golds: Sequence[tuple[str, str | None, str | None]]) -> bool:
    """A chunk from a gold source that holds the gold text or sits under the gold question."""
    for source, heading, contains in golds:
        if chunk.source != source:
            continue
        if contains and normalize(contains) in normalize(chunk.text):
            return True
        if heading and heading_matches(chunk.heading, heading):
            return True
    return False


def first_gold_rank(chunks: Sequence, golds) -> int | None:
    for rank, c in enumerate(chunks, 1):
        if is_gold(c, golds):
            return rank
    return None


def keyword_recall(answer: str, keywords: Sequence[str]) -> float | None:
    if not keywords:
        return None
    a = normalize(answer)
    return sum(1 for k in keywords if normalize(k) in a) / len(keywords)


def letters(idx: Iterable[int]) -> str:
    return "".join(LETTERS[i] for i in sorted(idx))


# ---------------------------------------------------------------- data

def data_dir() -> Path:
    env = os.environ.get("RAG_EVAL_DATA")
    if env:
        return Path(env)
    for d in (Path("eval"), Path(__file__).resolve().parent.parent / "eval"):
        if (d / "mcq.jsonl").exists() or (d / "retrieval.jsonl").exists():
            return d
    return Path("eval")


def load_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines eval set; a bad row is reported by its line number, not as a trace."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RagError(f"eval set not found: {path} (run from the repository root or set RAG_EVAL_DATA)") from None
    except UnicodeDecodeError as e:
        raise RagError(f"{path}: not UTF-8 (invalid byte at offset {e.start}); re-save it as UTF-8") from None
    rows, seen = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise RagError(f"{path}:{n}: invalid JSON ({e})") from None
        if not isinstance(row, dict):
            raise RagError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        if "id" in row:
            if row["id"] in seen:
                raise RagError(f"{path}:{n}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
            seen[row["id"]] = n
        rows.append(row)
    return rows


# ---------------------------------------------------------------- scoring with a cache

class ScoreCache:
    """Log-likelihoods by (model, prompt, continuations): re-running the report after changing only
    the decision rules costs seconds, not the ~20 minutes of LLM scoring. --no-cache bypasses it."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fresh: set[str] = set()
        self.data: dict[str, list] = {}
        self.hits = self.misses = self.repeats = 0  # hits: from disk; repeats: same call earlier in this run
        if path and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.data[rec["k"]] = rec["v"]
                except (ValueError, KeyError):
                    continue  # a torn last line from an interrupted run

    def score(self, gen, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        key = hashlib.sha256(json.dumps(
            [SCORE_CACHE_VERSION, type(gen).__name__, getattr(gen, "backend", ""), getattr(gen, "model_id", ""),
             messages, prefix, list(continuations)], ensure_ascii=False).encode()).hexdigest()
        if key in self.data:
            if key in self._fresh:
                self.repeats += 1
            else:
                self.hits += 1
            return [tuple(x) for x in self.data[key]]
        self.misses += 1
        result = [(float(s), int(n)) for s, n in gen.score(messages, prefix, continuations)]
        self.data[key] = result
        self._fresh.add(key)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"k": key, "v": result}) + "\n")
        return result


# ---------------------------------------------------------------- progress

def _bar(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------- MCQ suite

def _mcq_messages(question: str, options: Sequence[str], passages: str | None) -> list[dict]:
    from . import prompts

    context = prompts.MCQ_CONTEXT.format(passages=passages) if passages else ""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return [{"role": "user", "content": prompts.MCQ_USER.format(context=context, question=question, options=opts)}]


def _continuations(options: Sequence[str], fmt: str, delimiter: str = "") -> list[str]:
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
    from .citations import support

    evidence = "\n".join(_strip_item(p, question, options) for p in passages)
    return [support(o, evidence) if o.strip() else 0.0 for o in options]


def explanation_retrieved(explanation: str, chunks: Sequence) -> bool | None:
    from .citations import support

    head = " ".join(explanation.split())[:120]
    if len(head) < 4:
        return None
    return any(support(head, c.text) >= 0.6 for c in chunks)


def run_mcq(a, args, cache: ScoreCache) -> dict:
    every = load_jsonl(data_dir() / "mcq.jsonl")
    items = [r for r in every if not r.get("excluded")]
    excluded = len(every) - len(items)
    if args.limit:
        items = items[: args.limit]
    k = args.k or MCQ_K
    gen = a.generator
    from . import prompts
    from .retriever import Retriever

    retriever = Retriever(a.index(), a.embedder, candidates=a.settings.candidates, rrf_k=a.settings.rrf_k)
    prefix, delim = split_prefix(prompts.MCQ_ANSWER_PREFIX)
    # Likelihood of every continuation without content, for PMI: the same template with the question
    # and n options replaced by "N/A" (content-free input, as in contextual calibration). For letters
    # this is the model's prior for each position given n options; for texts, the prior of the string.
    orders = {it["id"]: shuffle_options(it["options"], it["answer"], random.Random(f"{SHUFFLE_SEED}:{it['id']}"))
              for it in items}
    by_n: dict[int, set[str]] = defaultdict(set)
    for it in items:
        for o_list in (it["options"], [it["options"][j] for j in orders[it["id"]][0]]):
            for fmt in FORMATS:
                by_n[len(o_list)].update(_continuations(o_list, fmt, delim))
    uncond: dict[tuple[int, str], float] = {}
    for n, conts in sorted(by_n.items()):
        conts = sorted(conts)
        raw = cache.score(gen, _mcq_messages(CONTENT_FREE, [CONTENT_FREE] * n, None), prefix, conts)
        uncond.update({(n, c): s for c, (s, _) in zip(conts, raw)})

    rows = []
    t_start = time.perf_counter()
    bar = _bar(items, "mcq")
    for it in bar:
        t0 = time.perf_counter()
        q, opts, gold = it["question"], it["options"], it["answer"]
        retrieval = retriever.search(q + "\n" + "\n".join(opts), k, mode="hybrid")
        hits = retrieval.hits
        passages = prompts.format_passages(hits)
        perm, shuffled_gold = orders[it["id"]]
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
            for order, o_list in (("original", opts), ("shuffled", shuffled)):
                entry = row["scores"][f"{cond}/{order}"] = {}
                for fmt in FORMATS:
                    conts = _continuations(o_list, fmt, delim)
                    raw = cache.score(gen, _mcq_messages(q, o_list, ctx), prefix, conts)
                    entry[f"raw-{fmt}"] = raw
                    entry.update(_variants(fmt, raw, [uncond[(len(conts), c)] for c in conts]))
                if order == "shuffled":  # every list back to the original option order
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
        rows.append(row)
        bar.set_postfix_str(f"{row['seconds']:.1f}s/item")
    bar.close()
    return summarize_mcq(rows, unconditional_continuations=len(uncond), k=k, excluded=excluded,
                         seconds=time.perf_counter() - t_start, model=getattr(gen, "model_id", "?"),
                         embedder=a.settings.embedder)


def summarize_mcq(rows: list[dict], **meta) -> dict:
    """Accuracy tables from per-item option scores (no model calls: re-runnable on saved rows)."""
    n = len(rows)

    def acc(cond_order: str, scoring: str, ratio: float) -> dict:
        em, jac = 0, 0.0
        for r in rows:
            pred = decide(r["scores"][cond_order][scoring], ratio)
            em += exact_match(pred, r["gold"])
            jac += jaccard(pred, r["gold"])
        return {"exact": em / n if n else 0.0, "jaccard": jac / n if n else 0.0, "correct": em}

    variants = {f"{co}/{sc}/{rule}": acc(co, sc, ratio)
                for co in ("rag/original", "rag/shuffled", "closed/original", "closed/shuffled")
                for sc in SCORINGS for rule, ratio in (("top1", 1.0), ("gap", GAP_RATIO))}
    sensitivity = {f"{co}/{sc}": {str(ratio): acc(co, sc, ratio)["exact"] for ratio in (1.0, 0.75, 0.5, 0.25, 0.1)}
                   for co in ("rag/original", "closed/original") for sc in SCORINGS}
    for r in rows:
        for co in ("rag/original", "rag/shuffled", "closed/original", "closed/shuffled"):
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

    def group_acc(key: Callable[[dict], Iterable[str]]) -> dict:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            for g in key(r):
                groups[g].append(r)
        return {g: {"n": len(rs), "ids": [r["id"] for r in rs],
                    "rag": sum(r["correct"]["rag/original"] for r in rs) / len(rs),
                    "closed": sum(r["correct"]["closed/original"] for r in rs) / len(rs),
                    "baseline": sum(r["baseline"]["expected_exact"] for r in rs) / len(rs)}
                for g, rs in sorted(groups.items())}

    position = {}
    for co in ("rag/original", "rag/shuffled", "closed/original", "closed/shuffled"):
        counts: Counter = Counter()
        for r in rows:
            pred = r["pred"][co]
            if co.endswith("shuffled"):  # position shown to the model
                pred = [r["perm"].index(i) for i in pred]
            counts.update(LETTERS[i] for i in pred)
        position[co] = dict(sorted(counts.items()))
    gold_pos = Counter(LETTERS[i] for r in rows for i in r["gold"])
    expl = [r for r in rows if r["explanation_retrieved"] is not None]
    return {
        "meta": {**meta, "n_items": n, "multi_answer": sum(len(r["gold"]) > 1 for r in rows),
                 "headline_scoring": HEADLINE_SCORING, "gap_ratio": GAP_RATIO, "shuffle_seed": SHUFFLE_SEED,
                 "shuffled_items": sum(r["perm"] != list(range(len(r["perm"]))) for r in rows)},
        "headline": headline,
        "variants": variants,
        "gap_sensitivity": sensitivity,
        "by_category": group_acc(lambda r: r["category"] or ["(none)"]),
        "by_derived_from": group_acc(lambda r: [r["derived_from"] or "?"]),
        "by_answer_size": group_acc(lambda r: ["single" if len(r["gold"]) == 1 else "multi"]),
        "by_explanation_retrieved": group_acc(lambda r: [{True: "retrieved", False: "not retrieved",
                                                         None: "no explanation"}[r["explanation_retrieved"]]]),
        "explanation_retrieved_rate": (sum(bool(r["explanation_retrieved"]) for r in expl) / len(expl)) if expl else None,
        "predicted_positions": position,
        "gold_positions": dict(sorted(gold_pos.items())),
        "items": rows,
    }


# ---------------------------------------------------------------- retrieval suite

def run_retrieval(a, args) -> dict:
    items = load_jsonl(data_dir() / "retrieval.jsonl")
    if args.limit:
        items = items[: args.limit]
    from .retriever import COVERAGE_THRESHOLD, DENSE_THRESHOLD, Retriever

    index = a.index()
    retriever = Retriever(index, a.embedder, candidates=max(a.settings.candidates, MAX_K), rrf_k=a.settings.rrf_k)
    rows = []
    t_start = time.perf_counter()
    bar = _bar(items, "retrieval")
    for it in bar:
        t0 = time.perf_counter()
        golds = golds_of(it)
        row = {"id": it["id"], "kind": it["kind"], "lang": it.get("lang"), "question": it["question"], "ranks": {}}
        for mode in MODES:
            r = retriever.search(it["question"], MAX_K, mode=mode)
            chunks = [h.chunk for h in r.hits]
            row["ranks"][mode] = first_gold_rank(chunks, golds) if golds else None
            if mode == "hybrid":
                row.update(best_coverage=r.best_coverage, best_dense=r.best_dense, covered=r.covered,
                           top1=f"{chunks[0].source} · {chunks[0].heading[:40]}" if chunks else "")
        row["reachable"] = bool(golds) and any(is_gold(c, golds) for c in index.chunks)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        bar.set_postfix_str(f"{row['seconds'] * 1000:.0f}ms/item")
    bar.close()
    return summarize_retrieval(rows, COVERAGE_THRESHOLD, DENSE_THRESHOLD, seconds=time.perf_counter() - t_start,
                               embedder=a.settings.embedder, chunks=len(index.chunks))


def summarize_retrieval(rows: list[dict], coverage_threshold: float, dense_threshold: float, **meta) -> dict:
    in_corpus = [r for r in rows if r["kind"] != "out_of_corpus"]
    table: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    groups = {"heading": [r for r in in_corpus if r["kind"] == "heading"],
              "paraphrase": [r for r in in_corpus if r["kind"] == "paraphrase"], "all": in_corpus}
    for lang in sorted({r["lang"] for r in in_corpus if r["kind"] == "paraphrase"}):
        groups[f"paraphrase/{lang}"] = [r for r in in_corpus if r["kind"] == "paraphrase" and r["lang"] == lang]
    for mode in MODES:
        for g, rs in groups.items():
            ranks = [r["ranks"][mode] for r in rs]
            table[f"{mode}/{g}"] = {"n": len(rs), "hit@1": hit_at(ranks, 1), "hit@5": hit_at(ranks, 5),
                                    "mrr@5": mrr_at(ranks, 5)}
            if g in ("heading", "paraphrase"):
                curves[f"{mode}/{g}"] = [hit_at(ranks, k) for k in range(1, MAX_K + 1)]

    # Abstaining: positive class = out-of-corpus question.
    data = [(r["best_coverage"], r["best_dense"], r["kind"] == "out_of_corpus") for r in rows]
    actual = [d[2] for d in data]
    current = prf([abstains(c, d, coverage_threshold, dense_threshold) for c, d, _ in data], actual)
    off = OFF
    cov_grid = [round(x * 0.025, 3) for x in range(0, 41)] + [off]
    dense_grid = [round(0.3 + x * 0.01, 2) for x in range(0, 71)] + [off]
    sweep = sweep_thresholds(data, cov_grid, dense_grid)
    best = best_setting(sweep)
    cov_only = [s for s in sweep if s["dense"] == off and s["coverage"] != off]
    dense_only = [s for s in sweep if s["coverage"] == off and s["dense"] != off]
    cv = cross_validate(data, cov_grid, dense_grid)
    return {
        "meta": {**meta, "n_items": len(rows), "kinds": dict(Counter(r["kind"] for r in rows)),
                 "unreachable": [r["id"] for r in in_corpus if not r["reachable"]]},
        "table": table,
        "curves": curves,
        "abstain": {
            "current": {"coverage": coverage_threshold, "dense": dense_threshold, **current},
            "best": best, "best_coverage_only": best_setting(cov_only), "best_dense_only": best_setting(dense_only),
            "cross_validated_f1": cv,
            "coverage_table": [s for s in cov_only if s["coverage"] in {0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                                                                        0.55, 0.6, 0.7, 0.8}],
            "dense_table": [s for s in dense_only if s["dense"] in {0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95}],
            "signal_quantiles": {
                kind: {sig: _quantiles([r[sig] for r in rows if (r["kind"] == "out_of_corpus") == (kind == "out_of_corpus")])
                       for sig in ("best_coverage", "best_dense")}
                for kind in ("in_corpus", "out_of_corpus")},
        },
        "items": rows,
    }


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


def _quantiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"min": s[0], "p10": pick(0.1), "p50": pick(0.5), "p90": pick(0.9), "max": s[-1]}


# ---------------------------------------------------------------- answers suite

def run_answers(a, args) -> dict:
    items = load_jsonl(data_dir() / "answers.jsonl")
    if args.limit:
        items = items[: args.limit]
    a.generator  # load before timing the first item
    rows = []
    t_start = time.perf_counter()
    bar = _bar(items, "answers")
    for it in bar:
        t0 = time.perf_counter()
        ans = a.answer(it["question"], args.k)
        golds = golds_of(it)
        cited = [h.chunk for _, h in ans.sources]
        row = {"id": it["id"], "question": it["question"], "in_corpus": it["in_corpus"], "answer": ans.text,
               "abstained": ans.abstained, "model_abstained": (not ans.abstained) and bool(_MODEL_ABSTAINS.search(ans.text)),
               "cited": [{"source": c.source, "line": c.line, "heading": c.heading[:60],
                          "gold": is_gold(c, golds) if golds else None,
                          "gold_source": c.source in {g[0] for g in golds}} for c in cited],
               "retrieved_gold_rank": first_gold_rank([h.chunk for h in ans.hits], golds) if golds else None,
               "keyword_recall": keyword_recall(ans.text, it.get("reference_keywords") or []) if it["in_corpus"] else None,
               "seconds": time.perf_counter() - t0}
        if it["in_corpus"] and ans.abstained:
            row["keyword_recall"] = 0.0 if it.get("reference_keywords") else None
        rows.append(row)
        bar.set_postfix_str(f"{row['seconds']:.1f}s/item")
    bar.close()
    return summarize_answers(rows, seconds=time.perf_counter() - t_start, k=args.k or a.settings.top_k,
                             model=getattr(a.generator, "model_id", "?"), embedder=a.settings.embedder)


def summarize_answers(rows: list[dict], **meta) -> dict:
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


# ---------------------------------------------------------------- reports

def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _f(x, d=3) -> str:
    return "–" if x is None else ("off" if x >= OFF else f"{x:.{d}f}")


def _cell(text: str, n: int = 60) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def mcq_markdown(r: dict) -> str:
    m, h = r["meta"], r["headline"]
    out = [f"# MCQ accuracy ({m['n_items']} scorable items)", "",
           f"Generator `{m['model']}`, embedder `{m['embedder']}`, {m['k']} passages per question (hybrid retrieval "
           f"on question + options). Exact match of the answer set; {m['multi_answer']} multi-answer items; "
           f"{m['excluded']} items excluded by the data set (options lost). Options scored as the continuation of "
           "the answer line; answer set = every option within ln 2 of the best score (softmax share >= 1/2 of "
           f"the best; fixed a priori). Headline scoring: `{m['headline_scoring']}` (chosen by the variant table "
           "below, i.e. on this same data). Shuffled = options permuted with a fixed seed "
           f"({m['shuffled_items']} items changed order; options that refer to others stay in place). "
           f"Wall time {m['seconds']:.0f} s.", "",
           "| condition | original order | shuffled |", "|---|---|---|",
           f"| **RAG** (LLM + retrieved passages) | **{_pct(h['rag_original'])}** | {_pct(h['rag_shuffled'])} |",
           f"| closed-book (same LLM, no passages) | {_pct(h['closed_original'])} | {_pct(h['closed_shuffled'])} |",
           f"| retrieval-only baseline (option/passage bigram overlap, single pick) | "
           f"{_pct(h['retrieval_only_baseline'])} | – |",
           f"| chance (random answer set of the right size) | {_pct(h['chance'])} | – |", "",
           "## Scoring variants (exact match; Jaccard in brackets)", "",
           "`text` = the option's text is the scored continuation, `letter` = its letter alone (the model "
           "answers \"B. text\"; one token, so sum = mean). `sum` = total log-prob, `mean` = per token, `pmi` = "
           "sum minus the same continuation's log-prob when the question and the n options are \"N/A\" "
           "(content-free calibration; for letters: the model's prior for each position). `top1` = single best "
           "option; `gap` = the multi-answer rule above.", "",
           "| scoring | RAG | RAG shuffled | closed-book | closed-book shuffled |", "|---|---|---|---|---|"]
    for sc in SCORINGS:
        for rule in ("top1", "gap"):
            cells = [f"{_pct(r['variants'][f'{co}/{sc}/{rule}']['exact'])} ({r['variants'][f'{co}/{sc}/{rule}']['jaccard']:.2f})"
                     for co in ("rag/original", "rag/shuffled", "closed/original", "closed/shuffled")]
            bold = "**" if (sc, rule) == (m["headline_scoring"], "gap") else ""
            out.append(f"| {bold}{sc}/{rule}{bold} | " + " | ".join(cells) + " |")
    out += ["", "## Gap-rule sensitivity (post hoc; the rule used is 0.5)", "",
            "| scoring | " + " | ".join(f"ratio {x}" for x in (1.0, 0.75, 0.5, 0.25, 0.1)) + " |",
            "|---|---|---|---|---|---|"]
    for key, vals in r["gap_sensitivity"].items():
        out.append(f"| {key} | " + " | ".join(_pct(v) for v in vals.values()) + " |")
    out += ["", "## Breakdown (headline scoring, original order)", "", "| group | n | RAG | closed-book | baseline |",
            "|---|---|---|---|---|"]
    for name in ("by_answer_size", "by_derived_from", "by_explanation_retrieved"):
        for g, v in r[name].items():
            out.append(f"| {g} | {v['n']} | {_pct(v['rag'])} | {_pct(v['closed'])} | {_pct(v['baseline'])} |")
    out += ["", f"Gold explanation among the retrieved passages: {_pct(r['explanation_retrieved_rate'])} of items "
            "that have one.", "", "## Position bias", "",
            f"Gold answers by position: {r['gold_positions']}.", ""]
    for co, counts in r["predicted_positions"].items():
        out.append(f"- predicted positions, {co}: {counts}")
    out += ["", "## Per item", "",
            "| id | category | question | gold | RAG | RAG shuf. | closed | baseline | expl. retrieved | top passages |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for it in r["items"]:
        mark = lambda co: ("✓ " if it["correct"][co] else "✗ ") + (letters(it["pred"][co]) or "∅")  # noqa: E731
        top = "; ".join(f"{p['source']}:{p['line']} {_cell(p['heading'], 24)}" for p in it["passages"])
        out.append(f"| {it['id']} | {_cell(' '.join(it['category']), 20)} | {_cell(it['question'], 50)} | "
                   f"{letters(it['gold'])} | {mark('rag/original')} | {mark('rag/shuffled')} | "
                   f"{mark('closed/original')} | {letters(it['baseline']['pred'])} | "
                   f"{ {True: 'yes', False: 'no', None: '–'}[it['explanation_retrieved']]} | {_cell(top, 120)} |")
    return "\n".join(out) + "\n"


def retrieval_markdown(r: dict) -> str:
    m, ab = r["meta"], r["abstain"]
    out = [f"# Retrieval ({m['n_items']} questions: {m['kinds']})", "",
           f"Embedder `{m['embedder']}`, {m['chunks']} chunks. A hit is a retrieved chunk from the gold source "
           "(or an alternative gold) whose text contains `gold_contains` or whose question heading matches "
           f"`gold_heading`. Wall time {m['seconds']:.1f} s.", "",
           "| retriever | questions | n | hit@1 | hit@5 | MRR@5 |", "|---|---|---|---|---|---|"]
    for key, v in r["table"].items():
        mode, group = key.split("/", 1)
        out.append(f"| {mode} | {group} | {v['n']} | {_pct(v['hit@1'])} | {_pct(v['hit@5'])} | {_f(v['mrr@5'])} |")
    if m["unreachable"]:
        out += ["", f"Gold unreachable in this index (no chunk satisfies the hit rule): {', '.join(m['unreachable'])}."]
    cur, best = ab["current"], ab["best"]
    out += ["", "## Abstaining on out-of-corpus questions", "",
            "Positive class = out-of-corpus question; the retriever answers when the best keyword hit covers "
            ">= COVERAGE_THRESHOLD of the query's IDF mass or the best dense cosine >= DENSE_THRESHOLD.", "",
            "| setting | coverage | dense | precision | recall | F1 | TP/FP/FN/TN |", "|---|---|---|---|---|---|---|"]
    for name, s in (("current constants", cur), ("best F1 (both)", best),
                    ("best F1, coverage only", ab["best_coverage_only"]), ("best F1, dense only", ab["best_dense_only"])):
        out.append(f"| {name} | {_f(s['coverage'], 3)} | {_f(s['dense'], 2)} | {_pct(s['precision'])} | "
                   f"{_pct(s['recall'])} | {s['f1']:.3f} | {s['tp']}/{s['fp']}/{s['fn']}/{s['tn']} |")
    cv = ab["cross_validated_f1"]
    out += ["", f"Thresholds tuned on this set overstate F1; repeated 2-fold cross-validation (tune on one half, "
            f"test on the other, {cv['folds']} folds): mean F1 {cv['mean_f1']:.3f} "
            f"(min {cv['min_f1']:.3f}, max {cv['max_f1']:.3f}).", "", "### Calibration: coverage only (dense off)", "",
            "| coverage | precision | recall | F1 |", "|---|---|---|---|"]
    out += [f"| {s['coverage']} | {_pct(s['precision'])} | {_pct(s['recall'])} | {s['f1']:.3f} |" for s in ab["coverage_table"]]
    out += ["", "### Calibration: dense only (coverage off)", "", "| dense | precision | recall | F1 |", "|---|---|---|---|"]
    out += [f"| {s['dense']} | {_pct(s['precision'])} | {_pct(s['recall'])} | {s['f1']:.3f} |" for s in ab["dense_table"]]
    out += ["", "### Signal distributions", "", "| questions | signal | min | p10 | p50 | p90 | max |",
            "|---|---|---|---|---|---|---|"]
    for kind, sigs in ab["signal_quantiles"].items():
        for sig, q in sigs.items():
            out.append(f"| {kind} | {sig} | " + " | ".join(_f(q.get(x)) for x in ("min", "p10", "p50", "p90", "max")) + " |")
    misses = [it for it in r["items"] if it["kind"] == "paraphrase" and (it["ranks"]["hybrid"] or 99) > 5]
    out += ["", f"## Paraphrase misses, hybrid (gold not in top 5): {len(misses)}", "",
            "| id | question | gold rank (dense/bm25/hybrid) | hybrid top 1 |", "|---|---|---|---|"]
    for it in misses:
        rk = "/".join(str(it["ranks"][mo] or "–") for mo in MODES)
        out.append(f"| {it['id']} | {_cell(it['question'], 50)} | {rk} | {_cell(it['top1'], 50)} |")
    wrong = [it for it in r["items"] if (it["kind"] == "out_of_corpus") == it["covered"]]
    out += ["", f"## Abstain errors at the current constants: {len(wrong)}", "",
            "| id | kind | question | coverage | dense |", "|---|---|---|---|---|"]
    for it in wrong:
        out.append(f"| {it['id']} | {it['kind']} | {_cell(it['question'], 50)} | {it['best_coverage']:.3f} | "
                   f"{it['best_dense']:.3f} |")
    return "\n".join(out) + "\n"


def answers_markdown(r: dict) -> str:
    m = r["meta"]
    g, gm = r["abstain_gate"], r["abstain_gate_or_model"]
    out = [f"# Free-form answers ({m['n_items']} questions: {m['in_corpus']} in corpus, {m['out_of_corpus']} not)", "",
           f"Generator `{m['model']}`, embedder `{m['embedder']}`, k={m['k']}. Wall time {m['seconds']:.0f} s.", "",
           "| metric | value |", "|---|---|",
           f"| citation precision (cited passage holds the gold text / sits under the gold question) | "
           f"{_pct(r['citation_precision'])} of {r['citations']} citations |",
           f"| citation precision, source file only | {_pct(r['citation_precision_source_only'])} |",
           f"| in-corpus answers citing a gold passage | {_pct(r['answers_with_gold_citation'])} |",
           f"| in-corpus answers with no citation (not abstained) | {r['answers_without_citation']} |",
           f"| gold passage among the retrieved (in corpus) | {_pct(r['gold_retrieved@k'])} |",
           f"| keyword recall (reference keywords in the answer; abstained = 0) | {_pct(r['keyword_recall'])} |",
           f"| abstain P / R / F1 (retrieval gate) | {_pct(g['precision'])} / {_pct(g['recall'])} / {g['f1']:.3f} |",
           f"| abstain P / R / F1 (gate, or the model says the passages do not cover it) | {_pct(gm['precision'])} / "
           f"{_pct(gm['recall'])} / {gm['f1']:.3f} |", "",
           "| id | in corpus | abstained | citations (✓ = gold) | keyword recall | s | answer |",
           "|---|---|---|---|---|---|---|"]
    for it in r["items"]:
        cites = " ".join(f"{'✓' if c['gold'] else '✗'}{c['source']}:{c['line']}" for c in it["cited"]) or "–"
        ab = "gate" if it["abstained"] else ("model" if it["model_abstained"] else "")
        out.append(f"| {it['id']} | {'yes' if it['in_corpus'] else 'no'} | {ab} | {cites} | {_pct(it['keyword_recall'])} | "
                   f"{it['seconds']:.1f} | {_cell(it['answer'], 80)} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- plots

def _cjk_font() -> str | None:
    """A font with Chinese glyphs, if the system has one (else labels fall back to ASCII and item ids)."""
    from matplotlib import font_manager as fm

    for f in fm.fontManager.ttflist:
        if any(s in f.name for s in ("CJK SC", "WenQuanYi", "Droid Sans Fallback", "Source Han Sans")):
            return f.name
    # matplotlib's font cache may predate a font installed later
    files = [p for p in fm.findSystemFonts() if any(k in Path(p).name.lower() for k in ("cjk", "wqy", "fallback"))]
    for path in sorted(files, key=lambda p: ("Sans" not in p, p)):
        try:
            fm.fontManager.addfont(path)
            return fm.FontProperties(fname=path).get_name()
        except (OSError, RuntimeError, ValueError):
            continue
    return None


def plot_mcq(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = _cjk_font()
    if font:
        plt.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
    cats = r["by_category"]
    names = list(cats)
    labels = [n if font else n.encode("ascii", "ignore").decode().strip() for n in names]
    labels = [f"{lab} Q{','.join(map(str, cats[n]['ids']))}" for lab, n in zip(labels, names)]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [cats[n]["rag"] for n in names], height=0.4, label="RAG")
    ax.barh([i - 0.2 for i in y], [cats[n]["closed"] for n in names], height=0.4, label="closed-book")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("exact-match accuracy")
    ax.set_title(f"MCQ accuracy by category (RAG {r['headline']['rag_original']:.0%}, "
                 f"closed-book {r['headline']['closed_original']:.0%})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_retrieval(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = list(range(1, MAX_K + 1))
    colors = dict(zip(MODES, ("tab:orange", "tab:green", "tab:blue")))
    for key, curve in r["curves"].items():
        mode, group = key.split("/")
        ax.plot(ks, curve, marker="o", color=colors[mode], linestyle="-" if group == "paraphrase" else "--",
                label=f"{mode} ({group})")
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"hit@k per retriever ({r['meta']['embedder']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- entry point

def _eval_assistant(a, args, tmp: Path):
    """The assistant the suites run on: the configured index when --index-dir / RAG_INDEX_DIR is
    given, otherwise a fresh index built from the corpus in `tmp` (current code and --embedder)."""
    from .assistant import Assistant

    if getattr(args, "index_dir", None) or os.environ.get("RAG_INDEX_DIR"):
        return a
    b = Assistant(replace(a.settings, index_dir=tmp / "index"), embedder=a._embedder, generator=a._generator,
                  progress=a.progress, warn=a.warn)
    t0 = time.perf_counter()
    report = b.build()
    print(f"eval: built a throwaway index ({report.chunks} chunks, embedder {a.settings.embedder}) "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return b


def _write_summary(out: Path) -> None:
    """eval/results/README.md: the headline numbers of whichever suites have results."""
    lines = ["# Evaluation results", "", "Generated by `rag eval`; details in the per-suite reports.", ""]
    for suite in SUITES:
        p = out / f"{suite}.json"
        if not p.exists():
            continue
        r = json.loads(p.read_text(encoding="utf-8"))
        m = r["meta"]
        if suite == "mcq":
            h = r["headline"]
            lines.append(f"- [MCQ](mcq.md) ({m['n_items']} items): RAG {_pct(h['rag_original'])} "
                         f"(shuffled {_pct(h['rag_shuffled'])}), closed-book {_pct(h['closed_original'])}, "
                         f"retrieval-only {_pct(h['retrieval_only_baseline'])}, chance {_pct(h['chance'])}; "
                         f"{m['seconds']:.0f} s")
        elif suite == "retrieval":
            t = r["table"]
            lines.append(f"- [Retrieval](retrieval.md) (`{m['embedder']}`): paraphrase hit@5 dense/bm25/hybrid "
                         + "/".join(_pct(t[f'{mo}/paraphrase']['hit@5']) for mo in MODES)
                         + ", MRR@5 " + "/".join(_f(t[f'{mo}/paraphrase']['mrr@5']) for mo in MODES)
                         + f"; abstain F1 {r['abstain']['current']['f1']:.3f} at the current thresholds, "
                         f"{r['abstain']['best']['f1']:.3f} best (cross-validated "
                         f"{r['abstain']['cross_validated_f1']['mean_f1']:.3f}); {m['seconds']:.0f} s")
        else:
            lines.append(f"- [Answers](answers.md) ({m['n_items']} questions): citation precision "
                         f"{_pct(r['citation_precision'])}, keyword recall {_pct(r['keyword_recall'])}, "
                         f"abstain F1 {r['abstain_gate']['f1']:.3f} (gate) / {r['abstain_gate_or_model']['f1']:.3f} "
                         f"(gate or model); {m['seconds']:.0f} s")
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(args, assistant) -> int:
    suites = SUITES if getattr(args, "suite", "all") in (None, "all") else (args.suite,)
    out = Path(getattr(args, "out", None) or "eval/results")
    out.mkdir(parents=True, exist_ok=True)
    no_cache = getattr(args, "no_cache", False)
    cache = ScoreCache(None if no_cache else assistant.settings.cache_dir / "eval" / "scores.jsonl")
    tmp = Path(tempfile.mkdtemp(prefix="rag-eval-"))
    t_all = time.perf_counter()
    try:
        a = _eval_assistant(assistant, args, tmp)
        for suite in suites:
            t0 = time.perf_counter()
            if suite == "mcq":
                r = run_mcq(a, args, cache)
                r["meta"]["score_cache"] = {"from_disk": cache.hits, "scored": cache.misses, "repeated": cache.repeats}
                (out / "mcq.md").write_text(mcq_markdown(r), encoding="utf-8")
                plot_mcq(r, out / "mcq_by_category.png")
                h = r["headline"]
                summary = (f"RAG {_pct(h['rag_original'])} (shuffled {_pct(h['rag_shuffled'])}), closed-book "
                           f"{_pct(h['closed_original'])}, retrieval-only {_pct(h['retrieval_only_baseline'])}, "
                           f"chance {_pct(h['chance'])}")
                if cache.hits:
                    summary += f" [{cache.hits} of {cache.hits + cache.misses + cache.repeats} LLM scorings from the cache]"
            elif suite == "retrieval":
                r = run_retrieval(a, args)
                (out / "retrieval.md").write_text(retrieval_markdown(r), encoding="utf-8")
                plot_retrieval(r, out / "retrieval_hit_at_k.png")
                t, ab = r["table"], r["abstain"]
                summary = ("paraphrase hit@5 " + " ".join(f"{mo} {_pct(t[f'{mo}/paraphrase']['hit@5'])}" for mo in MODES)
                           + f"; MRR@5 hybrid {_f(t['hybrid/paraphrase']['mrr@5'])}; abstain F1 "
                           f"{ab['current']['f1']:.3f} (best {ab['best']['f1']:.3f} at coverage "
                           f"{_f(ab['best']['coverage'])}, dense {_f(ab['best']['dense'], 2)})")
            elif suite == "answers" and not getattr(args, "set", None):
                r = run_answers(a, args)
                (out / "answers.md").write_text(answers_markdown(r), encoding="utf-8")
                summary = (f"citation precision {_pct(r['citation_precision'])}, keyword recall "
                           f"{_pct(r['keyword_recall'])}, abstain F1 {r['abstain_gate']['f1']:.3f}")
            else:  # a rubric set (--set), evidence recall, abstain calibration
                from .answer_suite import run_suite

                r, summary = run_suite(suite, a, args, out, lambda xs: _bar(xs, suite))
                print(f"{suite}: {summary}  ({time.perf_counter() - t0:.1f}s)")
                continue
            r["meta"]["wall_seconds"] = time.perf_counter() - t0
            (out / f"{suite}.json").write_text(json.dumps(r, ensure_ascii=False, indent=1), encoding="utf-8")
            print(f"{suite}: {summary}  ({r['meta']['wall_seconds']:.1f}s)")
        _write_summary(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"eval: {', '.join(suites)} in {time.perf_counter() - t_all:.1f}s -> {out}/")
    return 0
