"""OpenMP wait policy x machine load, with the adaptive thread count: does spinning help, and does it hurt?

Each of the four runs is a fresh process (libgomp reads OMP_WAIT_POLICY once, when it loads): the packaged
1.5B, threads chosen per request (rag.cpu), a ~450-token prompt from scratch, 48 generated tokens, 3 repeats.
"Busy" runs a second process spinning on one core the whole time.

    python eval/omp_wait.py [--out eval/results]   -> omp_wait.md / .json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child() -> None:
    sys.path[:0] = [str(ROOT)]
    from rag import prompts
    from rag.config import Settings
    from rag.generators import load_generator

    s = Settings.from_env()
    gen = load_generator(s.generator, s.cache_dir, threads=0)
    text = (ROOT / "corpus" / "dl_interview_54.txt").read_text(encoding="utf-8")[2000:2600]
    msgs = [{"role": "system", "content": prompts.EVIDENCE_SYSTEM},
            {"role": "user", "content": "依据:\n" + text + "\n\n问题: 这段话讲了什么？"}]
    runs = []
    for _ in range(3):
        gen.kv.clear()
        t0, first = time.perf_counter(), None
        for _piece in gen.stream(msgs, max_tokens=48):
            first = first or time.perf_counter() - t0
        total, st = time.perf_counter() - t0, gen.stats
        runs.append({"first_token_s": round(first, 2), "threads": st.get("threads"),
                     "prefill_tps": round((st["prompt_tokens"] - st.get("cached_tokens", 0)) / st["prefill_s"], 1),
                     "gen_tps": round(st["gen_tokens"] / (total - first), 1)})
    print(json.dumps(runs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child()
        return 0
    rows = []
    for policy in ("PASSIVE", "ACTIVE"):
        for busy in (False, True):
            burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                out = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True,
                                     env={**os.environ, "OMP_WAIT_POLICY": policy}, check=True).stdout
            finally:
                if burner:
                    burner.kill()
                    burner.wait()
            runs = json.loads(out.strip().splitlines()[-1])
            med = lambda k: sorted(r[k] for r in runs)[1]  # noqa: E731 - median of 3
            rows.append({"policy": policy, "busy": busy, "runs": runs, "threads": runs[-1]["threads"],
                         "prefill_tps": med("prefill_tps"), "gen_tps": med("gen_tps"),
                         "first_token_s": med("first_token_s")})
            print(rows[-1]["policy"], "busy" if busy else "idle", rows[-1]["gen_tps"], "tok/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "omp_wait.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    lines = ["# OpenMP wait policy (llama.cpp threads) x machine load", "",
             "`python eval/omp_wait.py`: the packaged 1.5B, adaptive threads (rag.cpu), ~450-token prompt from "
             "scratch, 48 tokens, median of 3. Busy: another process spins on one core.", "",
             "| OMP_WAIT_POLICY | machine | threads chosen | prompt tok/s | generation tok/s | first token |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['policy']} | {'busy' if r['busy'] else 'idle'} | {r['threads']} | {r['prefill_tps']} | "
              f"{r['gen_tps']} | {r['first_token_s']} s |" for r in rows]
    (args.out / "omp_wait.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
