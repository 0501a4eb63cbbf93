"""What each `rag eval <suite>` reads and runs: eval set -> items -> suite -> Result (data, no output).

`rag.cli` parses the flags, picks the index, calls `run` for each suite, writes the reports
(report.write) and prints the summaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import answers, mcq, mcq_judge, mcq_rules, retrieval, tuning
from .cache import ScoreCache
from .data import data_dir, load_jsonl, load_set, spread

CORE = ("mcq", "retrieval", "answers")  # `rag eval` with no suite; eval/results/README.md summarises these


@dataclass
class Options:
    k: int | None = None  # passages per question (default: each suite's own)
    limit: int | None = None  # only the first N items (quick check; abstain then does not save its fit)
    every: int | None = None  # answers --set, mcq: every N-th item
    answer_set: Path | None = None  # answers: a rubric set instead of the keyword set; retrieval: another set


@dataclass
class Result:
    kind: str  # "mcq", "retrieval", "answers" (keyword set), "rubric" (--set), "evidence", "abstain", "mcq-judge"
    name: str  # file stem of the report under eval/results/
    data: dict = field(repr=False)
    title: str = ""


def _scorable_mcq(limit: int | None, every_nth: int | None = None) -> tuple[list[dict], int]:
    every = load_set("mcq.jsonl")
    items = [i for i in every if not i.get("excluded")]
    return spread(items, every_nth, limit), len(every) - len(items)


def _mcq(a, o: Options, cache: ScoreCache) -> Result:
    items, excluded = _scorable_mcq(o.limit, o.every)
    r = mcq.run(a, items, cache, o.k, excluded=excluded, tuned_on=mcq_rules.is_tuning_set(data_dir() / "mcq.jsonl"))
    r["meta"]["set"] = f"{data_dir().name}/mcq.jsonl"
    r["meta"]["every"] = o.every
    r["meta"]["score_cache"] = cache.stats()
    # A second MCQ set kept in its own directory (eval/mcq_blind/mcq.jsonl) gets its own report.
    return Result("mcq", data_dir().name if data_dir().name.startswith("mcq_") else "mcq", r)


def _mcq_judge(a, o: Options, cache: ScoreCache) -> Result:
    items, _ = _scorable_mcq(o.limit)
    return Result("mcq-judge", "mcq_judge", mcq_judge.run(a, items, o.k))


def _retrieval(a, o: Options, cache: ScoreCache) -> Result:
    if not o.answer_set:
        return Result("retrieval", "retrieval", retrieval.run(a, spread(load_set("retrieval.jsonl"), limit=o.limit)))
    # a held-out or blind set in the same format (report named after it, e.g. retrieval_heldout)
    r = retrieval.run(a, spread(load_jsonl(o.answer_set), limit=o.limit))
    r["meta"]["set"] = o.answer_set.name
    return Result("retrieval", o.answer_set.stem, r)


def _answers(a, o: Options, cache: ScoreCache) -> Result:
    if not o.answer_set:
        return Result("answers", "answers", answers.run_keywords(a, spread(load_set("answers.jsonl"), limit=o.limit), o.k))
    items = spread(load_jsonl(o.answer_set), o.every, o.limit)
    r = answers.run_rubric(a, items, o.k)
    return Result("rubric", rubric_name(o.answer_set, a.settings.answer_style, o.every), r,
                  title=f"Answers: {o.answer_set.name}")


def rubric_name(set_path: Path, answer_style: str, every: int | None) -> str:
    """answers_blind, answers_blind_passages_every3, …: the set, the style unless the default, the subset."""
    return set_path.stem + ("" if answer_style == "evidence" else f"_{answer_style}") + (f"_every{every}" if every else "")


def _older_sets() -> list[dict]:
    return load_set("retrieval.jsonl") + load_set("answers.jsonl")


def _tuning_set() -> list[dict]:
    return _older_sets() + _tune_set()


# Written like the blind set (detail questions, 40 near-topic) but about other facts (eval/TUNE_NOTES.md):
# all of it goes into the abstain fit, where the older sets give their out-of-corpus questions and a
# quarter of their paraphrases.
TUNE_SET = "answers_tune.jsonl"


def _tune_set() -> list[dict]:
    return load_set(TUNE_SET) if (data_dir() / TUNE_SET).exists() else []  # (another RAG_EVAL_DATA may lack it)


def _evidence(a, o: Options, cache: ScoreCache) -> Result:
    return Result("evidence", "evidence", tuning.run_evidence(a, _tuning_set(), o.k))


def _abstain(a, o: Options, cache: ScoreCache) -> Result:
    items = spread(tuning.abstain_items(_older_sets()) + _tune_set(), limit=o.limit)
    return Result("abstain", "abstain", tuning.run_abstain(a, items, o.k, save=not o.limit))


_RUNNERS = {"mcq": _mcq, "retrieval": _retrieval, "answers": _answers, "evidence": _evidence,
            "abstain": _abstain, "mcq-judge": _mcq_judge}


def run(name: str, a, options: Options | None = None, cache: ScoreCache | None = None) -> Result:
    """One suite on the assistant `a`; `cache`: LLM scores of the MCQ suite (default: none kept)."""
    if name not in _RUNNERS:
        raise ValueError(f"unknown eval suite {name!r} (one of {', '.join(_RUNNERS)})")
    t0 = time.perf_counter()
    result = _RUNNERS[name](a, options or Options(), cache or ScoreCache(None))
    if result.kind in CORE:
        result.data["meta"]["wall_seconds"] = time.perf_counter() - t0
    return result

