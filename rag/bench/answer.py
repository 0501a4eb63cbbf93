"""`rag bench answer`: the answer path as a user feels it, old (five passages) vs new (evidence) default.

One process, model warm, the same questions for both paths, alternating per question so that any
other load on the machine hits both alike. Per question: evidence on screen, first answer text on
screen (the evidence path's system-written quote, once the coverage judge has decided), first model
token, total; tokens the model read (prompt minus KV-cache reuse), generation speed; RSS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .report import Outcome, nearest_rank, peak_rss_mb, write_json

STYLES = ("passages", "evidence")


def _questions(n: int) -> list[str]:
    from ..evaluation.data import data_dir, load_jsonl

    items = [i for i in load_jsonl(data_dir() / "answers.jsonl") if i.get("in_corpus")]
    return [i["question"] for i in items][:n]


def _one(a, question: str) -> dict:
    read0 = getattr(a.generator, "tokens_read", None)
    t0 = time.perf_counter()
    first_text = None
    answer = None
    for ev in a.ask(question):
        if ev.kind == "token" and first_text is None:
            first_text = time.perf_counter() - t0
        elif ev.kind == "done":
            answer = ev.answer
    st = dict(getattr(a.generator, "stats", {}) or {})
    t = answer.timings
    # Every prompt token the model processed for this question (the coverage judge's prompt included),
    # not only the last call's: the answer reuses the judge's KV cache.
    read = (a.generator.tokens_read - read0) if read0 is not None else \
        (st.get("prompt_tokens") or 0) - (st.get("cached_tokens") or 0)
    gen = st.get("gen_tokens") or 0
    reading = (t["first_token"] - t["evidence_shown"]) if "first_token" in t and "evidence_shown" in t else None
    return {"question": question, "abstained": answer.abstained, "evidence_shown_s": t.get("evidence_shown"),
            "first_text_s": first_text, "first_token_s": t.get("first_token"), "total_s": t.get("total"),
            "prompt_tokens": st.get("prompt_tokens"), "tokens_read": read if not answer.abstained else 0,
            "prefill_tps": (read / reading) if reading and read > 0 else None,
            "gen_tps": ((gen - 1) / st["gen_s"]) if st.get("gen_s") and gen > 1 else None,
            "answer": answer.text[:200]}


def bench_answer(settings, n_questions: int = 12) -> dict:
    from ..assistant import Assistant
    from ..cpu import OtherLoad

    base = Assistant.from_settings(settings)
    base.generator, base.embedder  # loaded once, before deriving: both paths share them
    parts = {s: base.derive(answer_style=s) for s in STYLES}
    questions = _questions(n_questions)
    for s in STYLES:  # warm: model pages, prompt prefixes, jieba's dictionary
        parts[s].answer(questions[-1])
    rows = {s: [] for s in STYLES}
    with OtherLoad() as load:
        for q in questions:
            for s in STYLES:
                rows[s].append(_one(parts[s], q))
                print(f"bench answer: {s:9s} first token {rows[s][-1]['first_token_s'] or 0:5.1f}s  {q[:30]}",
                      file=sys.stderr, flush=True)
    out = {"model": settings.generator, "questions": len(questions), "other_load_cores": load.cores,
           "peak_rss_mb": peak_rss_mb(), "styles": {}}
    for s in STYLES:
        r = rows[s]
        answered = [x for x in r if not x["abstained"]]
        stats = {"answered": len(answered), "rows": r,
                 "tokens_read_mean": (sum(x["tokens_read"] for x in answered) / len(answered)) if answered else None,
                 "prefill_tps_p50": nearest_rank([x["prefill_tps"] for x in answered], 0.5),
                 "gen_tps_p50": nearest_rank([x["gen_tps"] for x in answered], 0.5)}
        for key in ("evidence_shown_s", "first_text_s", "first_token_s", "total_s"):
            pool = r if key == "evidence_shown_s" else answered  # a declined question has no answer timings
            for q in (0.5, 0.95):
                stats[f"{key}_p{int(q * 100)}"] = nearest_rank([x[key] for x in pool], q)
        out["styles"][s] = stats
    old, new = out["styles"]["passages"], out["styles"]["evidence"]
    out["first_token_speedup"] = (old["first_token_s_p50"] / new["first_token_s_p50"]
                                  if old["first_token_s_p50"] and new["first_token_s_p50"] else None)
    return out


def _f(x, nd=2, unit=""):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def markdown(r: dict) -> str:
    o, n = r["styles"]["passages"], r["styles"]["evidence"]
    lines = ["# Answer path: five passages (old default) vs evidence (new default)", "",
             f"`rag bench answer`: model `{r['model']}` warm, {r['questions']} questions from eval/answers.jsonl, both paths "
             f"in one process, alternating per question. Other load during the run: {_f(r['other_load_cores'])} cores. "
             f"Peak RSS {r['peak_rss_mb']:.0f} MB.", "",
             "| | passages (old) | evidence (new) |", "|---|---|---|",
             f"| questions answered (not declined) | {o['answered']} | {n['answered']} |"]
    for key, label in [("evidence_shown_s", "evidence/passages on screen"), ("first_text_s", "first answer text on screen"),
                       ("first_token_s", "first model token"), ("total_s", "whole answer")]:
        lines.append(f"| {label}, p50 / p95 | {_f(o[key + '_p50'])} / {_f(o[key + '_p95'])} s | "
                     f"{_f(n[key + '_p50'])} / {_f(n[key + '_p95'])} s |")
    lines += [f"| tokens the model reads per question (after KV reuse), mean | {_f(o['tokens_read_mean'], 0)} | "
              f"{_f(n['tokens_read_mean'], 0)} |",
              f"| prompt processing (tokens read / time from evidence to first token), p50 | "
              f"{_f(o['prefill_tps_p50'], 1)} tok/s | {_f(n['prefill_tps_p50'], 1)} tok/s |",
              f"| generation, p50 | {_f(o['gen_tps_p50'], 1)} tok/s | {_f(n['gen_tps_p50'], 1)} tok/s |",
              "", f"First model token, p50 ratio old/new: **{_f(r['first_token_speedup'], 2)}×**.", "",
              "Tokens read count every prompt token the model processed for the question, the judge's included. "
              "The evidence path's first model token includes the coverage judge (the same prompt, scored for "
              "\"能/不能\"; the answer then reuses its KV cache). Its first answer text on screen is the system-written quote "
              "of the best evidence sentence, shown as soon as the judge has decided that the evidence covers the question.", ""]
    return "\n".join(lines) + "\n"


def run(settings, *, out: Path, n_questions: int = 12) -> Outcome:
    """Measure, write <out>/bench_answer.md and .json."""
    r = bench_answer(settings, n_questions)
    write_json(out / "bench_answer.json", r)
    (out / "bench_answer.md").write_text(markdown(r), encoding="utf-8")
    n = r["styles"]["evidence"]
    return Outcome(r, [f"bench answer: first token p50 {_f(r['styles']['passages']['first_token_s_p50'])} s -> "
                       f"{_f(n['first_token_s_p50'])} s ({_f(r['first_token_speedup'])}x); evidence on screen p50 "
                       f"{_f(n['evidence_shown_s_p50'], 3)} s -> {out}/bench_answer.md"])
