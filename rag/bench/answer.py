"""`rag bench answer`: the answer path as a user feels it: five passages (the first default), evidence
sentences read in full, and evidence linked from per-chunk KV caches (chunk_kv on).

One process, model warm, the same questions for every path, alternating per question so that any
other load on the machine hits them alike. The chunk caches of the questions' passages are built
before the clock starts (as `rag index` does); their build time per chunk is reported too. Per
question: evidence on screen, first answer text on screen (the evidence path's system-written quote, once the coverage judge has decided), first model
token, total; tokens the model read (prompt minus KV-cache reuse), generation speed; RSS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..evidence import MAX_PASSAGES
from .report import Outcome, nearest_rank, peak_rss_mb, write_json

# path -> the settings that make it
PATHS = {"passages": {"answer_style": "passages", "chunk_kv": "off"},
         "evidence": {"answer_style": "evidence", "chunk_kv": "off"},
         "linked": {"answer_style": "evidence", "chunk_kv": "on"}}
STYLES = tuple(PATHS)


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
    judge = t.get("judge")
    after_judge = (t["first_token"] - t["evidence_shown"] - judge) if judge is not None and "first_token" in t else None
    return {"question": question, "abstained": answer.abstained, "evidence_shown_s": t.get("evidence_shown"),
            "judge_s": judge, "answer_prefill_s": after_judge,
            "first_text_s": first_text, "first_token_s": t.get("first_token"), "total_s": t.get("total"),
            "prompt_tokens": st.get("prompt_tokens"), "tokens_read": read if not answer.abstained else 0,
            "prefill_tps": (read / reading) if reading and read > 0 else None,
            "gen_tps": ((gen - 1) / st["gen_s"]) if st.get("gen_s") and gen > 1 else None,
            "answer": answer.text[:200]}


def bench_answer(settings, n_questions: int = 12) -> dict:
    from ..assistant import Assistant
    from ..cpu import OtherLoad

    base = Assistant.from_settings(settings)
    base.generator, base.embedder  # loaded once, before deriving: every path shares them
    parts = {s: base.derive(**PATHS[s]) for s in STYLES}
    questions = _questions(n_questions)
    linked = parts["linked"]
    chunks = {h.chunk.id: h.chunk for q in questions for h in linked.search(q).hits[:MAX_PASSAGES]}
    t0 = time.perf_counter()
    seen, built = linked.warm_chunk_kv(chunks=list(chunks.values()))
    warm_s = time.perf_counter() - t0
    for s in STYLES:  # warm: model pages, prompt prefixes, jieba's dictionary
        parts[s].answer(questions[-1])
    rows = {s: [] for s in STYLES}
    with OtherLoad() as load:
        for q in questions:
            for s in STYLES:
                rows[s].append(_one(parts[s], q))
                print(f"bench answer: {s:9s} first token {rows[s][-1]['first_token_s'] or 0:5.1f}s  {q[:30]}",
                      file=sys.stderr, flush=True)
    store = getattr(base.generator, "passage_store", None)
    out = {"model": settings.generator, "questions": len(questions), "other_load_cores": load.cores,
           "peak_rss_mb": peak_rss_mb(), "styles": {},
           "chunk_kv": {"chunks": seen, "built": built, "build_s": warm_s,
                        "build_s_per_chunk": warm_s / built if built else None,
                        "disk_mb": store.size_bytes() / 2 ** 20 if store else None,
                        "files": len(store.files()) if store else None,
                        "stats": dict(getattr(base.generator, "passage_stats", {}) or {})}}
    for s in STYLES:
        r = rows[s]
        answered = [x for x in r if not x["abstained"]]
        stats = {"answered": len(answered), "rows": r,
                 "tokens_read_mean": (sum(x["tokens_read"] for x in answered) / len(answered)) if answered else None,
                 "prefill_tps_p50": nearest_rank([x["prefill_tps"] for x in answered], 0.5),
                 "gen_tps_p50": nearest_rank([x["gen_tps"] for x in answered], 0.5)}
        for key in ("evidence_shown_s", "judge_s", "answer_prefill_s", "first_text_s", "first_token_s", "total_s"):
            pool = r if key == "evidence_shown_s" else answered  # a declined question has no answer timings
            for q in (0.5, 0.95):
                stats[f"{key}_p{int(q * 100)}"] = nearest_rank([x[key] for x in pool], q)
        out["styles"][s] = stats
    def ratio(a, b):
        x, y = out["styles"][a]["first_token_s_p50"], out["styles"][b]["first_token_s_p50"]
        return x / y if x and y else None

    out["first_token_speedup"] = ratio("passages", "evidence")
    out["linked_speedup_vs_passages"] = ratio("passages", "linked")
    out["linked_speedup_vs_evidence"] = ratio("evidence", "linked")
    return out


def _f(x, nd=2, unit=""):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def markdown(r: dict) -> str:
    st = r["styles"]
    cols = [("passages", "five passages, full prefill"), ("evidence", "evidence, full prefill"),
            ("linked", "evidence, linked chunk KV")]
    kv = r.get("chunk_kv") or {}
    lines = ["# Answer path: five passages vs evidence vs evidence linked from per-chunk KV caches", "",
             f"`rag bench answer`: model `{r['model']}` warm, {r['questions']} questions from eval/answers.jsonl, every "
             f"path in one process, alternating per question. Other load during the run: {_f(r['other_load_cores'])} "
             f"cores. Peak RSS {r['peak_rss_mb']:.0f} MB.", "",
             "| | " + " | ".join(c for _, c in cols) + " |", "|---" * (len(cols) + 1) + "|",
             "| questions answered (not declined) | " + " | ".join(str(st[k]["answered"]) for k, _ in cols) + " |"]
    for key, label in [("evidence_shown_s", "evidence/passages on screen"),
                       ("judge_s", "· coverage judge (reads the prompt, scores 能/不能)"),
                       ("answer_prefill_s", "· then the answer's own prompt tail, to its first token"),
                       ("first_text_s", "first answer text on screen"),
                       ("first_token_s", "first model token"), ("total_s", "whole answer")]:
        lines.append(f"| {label}, p50 / p95 | " + " | ".join(
            f"{_f(st[k][key + '_p50'])} / {_f(st[k][key + '_p95'])} s" for k, _ in cols) + " |")
    lines += ["| tokens the model reads per question (after KV reuse), mean | " +
              " | ".join(_f(st[k]["tokens_read_mean"], 0) for k, _ in cols) + " |",
              "| prompt processing (tokens read / time from evidence to first token), p50 | " +
              " | ".join(f"{_f(st[k]['prefill_tps_p50'], 1)} tok/s" for k, _ in cols) + " |",
              "| generation, p50 | " + " | ".join(f"{_f(st[k]['gen_tps_p50'], 1)} tok/s" for k, _ in cols) + " |",
              "", f"First model token, p50 ratios: five passages / linked **{_f(r.get('linked_speedup_vs_passages'))}×**, "
              f"evidence / linked **{_f(r.get('linked_speedup_vs_evidence'))}×**, five passages / evidence "
              f"{_f(r['first_token_speedup'])}×.", "",
              f"Chunk KV caches: {kv.get('built', 0)} of {kv.get('chunks', 0)} chunks built before the clock started in "
              f"{_f(kv.get('build_s'), 1)} s ({_f(kv.get('build_s_per_chunk'))} s per chunk: what the first question on "
              f"an uncached chunk pays once); {kv.get('files')} files, {_f(kv.get('disk_mb'), 0)} MB on disk; "
              f"link stats {kv.get('stats')}.", "",
              "Tokens read count every prompt token the model processed for the question, the judge's included; "
              "linked tokens are not read. The evidence paths' first model token includes the coverage judge (the same "
              "prompt, scored for \"能/不能\"; the answer then reuses its KV cache). Their first answer text on screen is the "
              "system-written quote of the best evidence sentence, shown as soon as the judge has decided.", ""]
    return "\n".join(lines) + "\n"


def run(settings, *, out: Path, n_questions: int = 12) -> Outcome:
    """Measure, write <out>/bench_answer.md and .json."""
    r = bench_answer(settings, n_questions)
    write_json(out / "bench_answer.json", r)
    (out / "bench_answer.md").write_text(markdown(r), encoding="utf-8")
    st = r["styles"]
    return Outcome(r, [f"bench answer: first token p50 {_f(st['passages']['first_token_s_p50'])} s (passages) / "
                       f"{_f(st['evidence']['first_token_s_p50'])} s (evidence) / {_f(st['linked']['first_token_s_p50'])} s "
                       f"(linked; {_f(r['linked_speedup_vs_passages'])}x vs passages); evidence on screen p50 "
                       f"{_f(st['linked']['evidence_shown_s_p50'], 3)} s -> {out}/bench_answer.md"])
