"""`rag bench tuning`: llama.cpp context options (threads, micro-batch, flash attention, KV cache type),
each configuration in its own worker process, best of a few repeats, the prompt processed from scratch."""

from __future__ import annotations

import subprocess
import sys

from .generation import job_inputs, run_worker
from .report import fmt, logger

TUNING = [  # (label, threads (0 = auto), generator options, environment, a competing busy process?)
    ("auto threads (default)", 0, {}, {}, False),
    ("2 threads", 2, {}, {}, False),
    ("1 thread", 1, {}, {}, False),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {}, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    ("2 threads, ubatch 512 (the default until 2026-12)", 2, {"n_batch": 512, "n_ubatch": 512}, {}, False),
    ("2 threads, ubatch 256", 2, {"n_batch": 256, "n_ubatch": 256}, {}, False),
    ("2 threads, ubatch 128", 2, {"n_batch": 512, "n_ubatch": 128}, {}, False),
    ("2 threads, batch 1024", 2, {"n_batch": 1024, "n_ubatch": 1024}, {}, False),
    ("2 threads, flash attention", 2, {"flash_attn": True}, {}, False),
    ("2 threads, flash attention, KV q8_0", 2, {"flash_attn": True, "kv_type": "q8_0"}, {}, False),
    ("auto threads, one core kept busy by another process", 0, {}, {}, True),
    ("2 threads, one core kept busy by another process", 2, {}, {}, True),
    ("1 thread, one core kept busy by another process", 1, {}, {}, True),
]

_log = logger("bench")


def bench_tuning(settings, quick: bool) -> dict:
    _log("building the RAG prompt")
    inputs = job_inputs(settings, 1)
    reps = 1 if quick else 3
    base = {"spec": settings.generator, "cache_dir": str(settings.cache_dir), "backend": "llama.cpp",
            "messages": inputs["messages"][:1] * reps, "n_gen": 16 if quick else 64, "fresh": True}
    rows = []
    for label, threads, opts, env, busy in [TUNING[0], TUNING[-1]] if quick else TUNING:
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            r = run_worker({**base, "label": label, "threads": threads, "options": opts, "env": env}, label)
        finally:
            if burner:
                burner.kill()
                burner.wait()
        runs = r.get("runs", [])
        # best of the repeats: other processes on a shared machine only ever slow a run down
        rows.append({"label": label, "threads": threads, "options": opts, "env": env, "competing_process": busy,
                     "threads_used": sorted({x.get("threads") for x in runs if x.get("threads")}),
                     "error": r.get("error"),
                     "prefill_tps": max((x["prefill_tps"] or 0 for x in runs), default=None),
                     "gen_tps": max((x["gen_tps"] or 0 for x in runs), default=None),
                     "ttft_s": min((x["ttft_s"] for x in runs), default=None),
                     "texts_identical": len({x["text"] for x in runs}) <= 1,
                     "text": runs[0]["text"] if runs else "", "other_load_cores": r.get("other_load_cores")})
    ref = rows[0]["text"] if rows else ""
    for row in rows:
        row["same_text_as_first"] = row.pop("text") == ref
    return {"model": settings.generator, "repeats": reps, "rows": rows, "quick": quick}


def markdown(t: dict) -> list[str]:
    lines = [f"## llama.cpp options — best of {t['repeats']} (prompt from scratch each time)", "",
             "| configuration | threads used | prompt tok/s | generation tok/s | first token | same text | other load |",
             "|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        if r.get("error"):
            lines.append(f"| {r['label']} | error: {r['error']} | | | | | |")
            continue
        used = ", ".join(map(str, r.get("threads_used") or [])) or "—"
        lines.append(f"| {r['label']} | {used} | {fmt(r['prefill_tps'])} | {fmt(r['gen_tps'])} | {fmt(r['ttft_s'], ' s', 2)} "
                     f"| {fmt(r['same_text_as_first'])} | {fmt(r['other_load_cores'], '', 2)} |")
    lines.append("")
    return lines
