"""One generator configuration measured in a fresh interpreter (`python -m rag.bench.worker JOB T_SPAWN`),
so that cold start (process start -> model ready) and peak RSS are that backend's own.

The job file (JSON, written by rag.bench.generation.run_worker) names the model spec, backend, threads,
backend options, the prompts and how many tokens to generate; the result is one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import RagError
from .report import peak_rss_mb, rounded


def main(job_file: str, t_spawn: float) -> int:
    """Load, then time the RAG prompts, scoring, and extra texts; JSON on stdout."""
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    # The generator alone, not an Assistant: the job sets backend options (micro-batch, flash attention,
    # KV type, drafting) that are not settings, and nothing here retrieves.
    from ..generators import load_generator

    label = job["label"]
    t = time.perf_counter()
    try:
        gen = load_generator(job["spec"], Path(job["cache_dir"]), backend=job["backend"], threads=job["threads"],
                             **job.get("options", {}))
    except RagError as e:
        print(f"[bench] {label}: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    res = {"backend": gen.backend, "options": job.get("options", {}), "threads": getattr(gen, "threads", job["threads"]),
           "load_s": round(time.perf_counter() - t, 2), "cold_start_s": round(time.time() - t_spawn, 2)}
    print(f"[bench] {label}: model ready after {res['cold_start_s']} s", file=sys.stderr, flush=True)
    runs = []
    for i, msgs in enumerate(job["messages"]):
        if job.get("fresh") and hasattr(gen, "clear_cache"):
            gen.clear_cache()
        runs.append(timed_stream(gen, msgs, job["n_gen"]))
        r = runs[-1]
        print(f"[bench] {label}: prompt {i + 1}/{len(job['messages'])}: {r['prompt_tokens']} tokens "
              f"({r['cached_tokens']} cached), first token {r['ttft_s']} s, {r['gen_tokens']} tokens at "
              f"{r['gen_tps']} tok/s", file=sys.stderr, flush=True)
    res["runs"] = runs
    if job.get("score"):
        sc = job["score"]
        t = time.perf_counter()
        scores = gen.score(sc["messages"], sc["prefix"], sc["options"])
        res["score"] = {"seconds": round(time.perf_counter() - t, 3), "logprobs": [round(s, 4) for s, _ in scores],
                        "tokens": [n for _, n in scores]}
    res["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(res, ensure_ascii=False), flush=True)
    return 0


def timed_stream(gen, messages: list[dict], n_gen: int) -> dict:
    """One streamed answer: time to first piece, total, and the backend's own prefill/decode counters."""
    t0 = time.perf_counter()
    first = None
    parts = []
    for piece in gen.stream(messages, max_tokens=n_gen):
        if first is None:
            first = time.perf_counter() - t0
        parts.append(piece)
    total = time.perf_counter() - t0
    st = dict(getattr(gen, "stats", {}))
    n = st.get("gen_tokens", 0)
    return {"prompt_tokens": st.get("prompt_tokens"), "cached_tokens": st.get("cached_tokens", 0),
            "ttft_s": round(first if first is not None else total, 3), "total_s": round(total, 3),
            "prefill_tps": rounded(_rate(st.get("prompt_tokens", 0) - st.get("cached_tokens", 0), st.get("prefill_s"))),
            "gen_tokens": n, "gen_tps": rounded(_rate(n - 1, st.get("gen_s"))), "threads": st.get("threads"),
            "drafted": st.get("drafted"), "accepted": st.get("accepted"), "text": "".join(parts)}


def _rate(n, seconds) -> float | None:
    return n / seconds if seconds and n > 0 else None


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m rag.bench.worker JOB_FILE SPAWN_TIME")
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
