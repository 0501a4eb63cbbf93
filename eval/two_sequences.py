"""Does the two-sequence, unified-KV llama.cpp context that per-chunk KV linking needs slow plain
generation? Loads the generator both ways (alternating, twice each) and times the same answer.

    python eval/two_sequences.py

Measured 2026-12-01, idle 2 cores: generation median 26.4 tok/s (one sequence) vs 26.2 (two),
prompt processing 82-96 vs 74-92 tok/s: no difference beyond run-to-run noise.
"""

import statistics
from pathlib import Path
from tempfile import TemporaryDirectory

from rag import prompts
from rag.config import Settings
from rag.generators import load_generator

MESSAGES = [{"role": "system", "content": prompts.EVIDENCE_SYSTEM},
            {"role": "user", "content": "请详细解释一下批归一化（Batch Normalization）的原理、作用和在训练与测试时的区别，越详细越好。"}]


def main() -> None:
    s = Settings.from_env()
    res: dict[str, list] = {}
    with TemporaryDirectory() as tmp:
        for label in ("one-seq", "two-seq", "one-seq", "two-seq"):
            kw = {"passage_cache": Path(tmp)} if label == "two-seq" else {}
            g = load_generator(s.generator, s.cache_dir, threads=0, **kw)
            for _ in range(3):
                g.clear_cache()
                "".join(g.stream(MESSAGES, max_tokens=160))
                st = g.stats
                res.setdefault(label, []).append(((st["gen_tokens"] - 1) / st["gen_s"], st["prompt_tokens"] / st["prefill_s"]))
            del g
    for k, v in res.items():
        print(f"{k}: generation {[round(x[0], 1) for x in v]} tok/s (median {statistics.median(x[0] for x in v):.1f}); "
              f"prompt processing {[round(x[1], 1) for x in v]} tok/s")


if __name__ == "__main__":
    main()
