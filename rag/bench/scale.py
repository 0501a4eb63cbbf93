"""`rag bench scale`: the whole retrieval path on synthetic Chinese corpora of 10k, 100k and 1M chunks.

The corpora (rag.bench.scale_corpus) are the real notes' sentences recombined, in files of 100 units
that go through the real `rag index` path (build_index: load, chunk, embed, vector index, keyword
store), so every number is the product's own. Each phase (rag.bench.scale_phases: build, keyword,
serve, add) runs in its own process. Results: <out>/scale.md, scale.json, scale.png
(rag.bench.scale_report); the JSON is saved after every phase, so a stopped run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .report import Outcome, earlier, logger, size_label, write_json
from .scale_phases import run_phase
from .scale_report import plot, render

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000,)
PHASES = ("build", "keyword", "serve", "add")

_log = logger("scale")


def run(settings, *, out: Path, quick: bool = False, sizes: list[int] | None = None, work: Path | None = None,
        reuse: bool = False) -> Outcome:
    """`sizes` in chunks (default 10k, 100k, 1M; 2k with `quick`); `work` holds the synthetic corpora and
    their indexes (default $RAG_SCALE_WORK or test-artifacts/scale); `reuse` skips the build of a size
    whose index an earlier run left there."""
    work = Path(work or os.environ.get("RAG_SCALE_WORK") or "test-artifacts/scale")
    sizes = list(sizes or (QUICK_SIZES if quick else SIZES))
    name = "scale_quick" if quick else "scale"
    path = out / f"{name}.json"
    report = earlier(path)
    report.setdefault("sizes", {})
    report.setdefault("previous_date", (report.get("machine") or {}).get("date"))
    report["machine"] = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "embedder": settings.embedder,
                         "load_start": round(os.getloadavg()[0], 2)}
    seed = Path(settings.corpus_dir).resolve()
    # RAG_SCALE_PHASES=add_at_scale: only the incremental add, against stores assembled at that size
    # (rag.bench.scale_phases.phase_add_at_scale), for sizes whose full build does not fit the time at hand
    phases = [p for p in os.environ.get("RAG_SCALE_PHASES", ",".join(PHASES)).split(",") if p]
    for n in sizes:
        label = size_label(n)
        job = {"n": n, "seed": str(seed), "corpus": str(work / f"corpus-{label}"), "index": str(work / f"index-{label}"),
               "embedder": settings.embedder}  # the one the report names (the phases ran RAG_EMBEDDER's before)
        res = report["sizes"].setdefault(label, {"n_target": n})
        if res.get("add") and "chunk_store" not in str(res["add"]) and not res.get("add_previous"):
            # measured before the shared stores: kept, labelled, beside this run's numbers
            res["add_previous"] = dict(res["add"], run=f"run of {report.get('previous_date', 'an earlier run')}")
        if "add" in phases:
            res["add_run"] = f"run of {report['machine']['date']}, load {report['machine']['load_start']}"
        for phase in phases:
            if phase == "build" and reuse and res.get("build") and (Path(job["index"]) / "CURRENT").exists():
                continue
            _log(f"{label}: {phase}")
            res[phase] = run_phase(phase, job)
            _log(f"{label}: {phase} -> {json.dumps(res[phase], ensure_ascii=False)[:300]}")
            write_json(path, report)
    (out / f"{name}.md").write_text(render(report), encoding="utf-8")
    plot(report, out / f"{name}.png")
    return Outcome(report, [f"wrote {out / name}.md, .json, .png"])
