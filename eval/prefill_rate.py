"""Why the answer path reads at ~85 tok/s when `rag bench tuning` shows ~147: prompt processing speed
depends on how many new tokens one call processes, and on how much is already in the KV cache.

For each length, the system prompt + demo is cached first (as on the answer path), then N new tokens are
prefilled in one call; best of 3. Also from scratch (no cached prefix), as `rag bench tuning` measures.

    python eval/prefill_rate.py [--threads 2] [--out eval/results]   -> prefill_rate.md / .json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

LENGTHS = (32, 64, 128, 256, 512, 1024)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from rag import prompts
    from rag.config import Settings
    from rag.cpu import OtherLoad
    from rag.generators import load_generator

    s = Settings.from_env()
    gen = load_generator(s.generator, s.cache_dir, threads=args.threads)
    cache = gen.kv
    head = gen.prompt_tokens([{"role": "system", "content": prompts.EVIDENCE_SYSTEM},
                              {"role": "user", "content": prompts.EVIDENCE_DEMO_USER},
                              {"role": "assistant", "content": prompts.EVIDENCE_DEMO_ASSISTANT}])
    notes = (ROOT / "corpus").glob("*.txt")
    filler = gen.llm.tokenize("".join(f.read_text(encoding="utf-8") for f in sorted(notes)).encode(), add_bos=False)
    rows = []
    with OtherLoad() as load:
        for n in LENGTHS:
            new = filler[1000:1000 + n]
            row = {"new_tokens": n, "cached_prefix": len(head)}
            for label, prefix in (("after_prefix", head), ("from_scratch", [])):
                best = None
                for _ in range(args.repeats):
                    cache.clear()
                    if prefix:
                        cache.prefill(prefix)
                    t0 = time.perf_counter()
                    cache.prefill(prefix + new)
                    dt = time.perf_counter() - t0
                    best = dt if best is None else min(best, dt)
                row[f"{label}_s"] = round(best, 3)
                row[f"{label}_tps"] = round(n / best, 1)
            t0 = time.perf_counter()
            cache.ctx.save()  # what every prefill also does: snapshot the state for the next question
            row["snapshot_s"] = round(time.perf_counter() - t0, 3)
            rows.append(row)
            print(f"{n:5d} new tokens: {row['after_prefix_tps']:6.1f} tok/s after the {len(head)}-token cached prefix, "
                  f"{row['from_scratch_tps']:6.1f} tok/s from scratch; snapshot {row['snapshot_s']:.3f} s", flush=True)
    report = {"model": s.generator, "threads": args.threads, "repeats": args.repeats, "rows": rows,
              "other_load_cores": None if load.cores is None else round(load.cores, 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefill_rate.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = ["# Prompt processing speed by call size", "",
             f"`python eval/prefill_rate.py --threads {args.threads}`: {s.generator}, best of {args.repeats}, "
             f"other processes' load {report['other_load_cores']} cores.", "",
             "Each prefill includes the state snapshot it takes for the next question (its own column: the copy alone).",
             "", "| new tokens in one call | tok/s after the cached system prompt + demo | tok/s from scratch "
             "| snapshot copy |", "|---|---|---|---|"]
    lines += [f"| {r['new_tokens']} | {r['after_prefix_tps']} | {r['from_scratch_tps']} | {r['snapshot_s']} s |"
              for r in rows]
    (args.out / "prefill_rate.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
