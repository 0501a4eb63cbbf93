"""`rag bench`: speed and memory benchmarks. Each suite measures, writes its report under `out`
(eval/results by default) and returns an Outcome (its data, and lines for the terminal).

  all         generation + retrieval            -> bench.md, bench.json   (rag.bench.speed)
  generation  llama.cpp vs transformers         -> bench.md section       (rag.bench.generation, worker)
  retrieval   embedding, index build, latency   -> bench.md section       (rag.bench.retrieval)
  tuning      llama.cpp context options         -> bench.md section       (rag.bench.tuning)
  ann         10M face vectors: ANN indexes     -> ann.md, .json, .png    (rag.bench.ann, ann_disk, ann_report)
  answer      passages vs evidence vs linked KV -> bench_answer.md, .json (rag.bench.answer)
  scale       10k/100k/1M-chunk corpora         -> scale.md, .json, .png  (rag.bench.scale, scale_*)
With `quick`, small sizes and *_quick report names. Shared helpers: rag.bench.report.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RagError
from .report import Outcome

SUITES = ("all", "generation", "retrieval", "tuning", "ann", "answer", "scale")


def run(suite: str, settings, *, out: Path = Path("eval/results"), quick: bool = False,
        sizes: list[int] | None = None, work: Path | None = None, reuse: bool = False) -> Outcome:
    """Run one suite. `sizes` (vectors or chunks) and `work` (scratch directory) are for ann and scale,
    `reuse` (keep indexes an earlier run built) for scale."""
    out = Path(out)
    if suite not in SUITES:
        raise RagError(f"unknown bench suite '{suite}' (choose from {', '.join(SUITES)})")
    if suite == "ann":
        from . import ann

        return ann.run(settings, out=out, quick=quick, sizes=sizes, work=work)
    if suite == "answer":
        from . import answer

        return answer.run(settings, out=out)
    if suite == "scale":
        from . import scale

        return scale.run(settings, out=out, quick=quick, sizes=sizes, work=work, reuse=reuse)
    from . import speed

    return speed.run(suite, settings, out=out, quick=quick)
