"""<out>/bench.md and bench.json (bench_quick.* with --quick): the generation, tuning and retrieval suites
share one report. Running one suite keeps the other suites' sections from the previous run."""

from __future__ import annotations

from pathlib import Path

from . import generation, retrieval, tuning
from .report import Outcome, earlier, machine_info, write_json


def run(suite: str, settings, *, out: Path, quick: bool = False) -> Outcome:
    """suite: all (generation + retrieval), generation, retrieval or tuning."""
    name = "bench_quick" if quick else "bench"
    report = earlier(out / f"{name}.json")
    report["machine"] = machine_info(quick)
    if suite in ("all", "retrieval"):
        report["retrieval"] = retrieval.bench_retrieval(settings, quick)
    if suite in ("all", "generation"):
        report["generation"] = generation.bench_generation(settings, quick, report["machine"])
    if suite == "tuning":
        report["tuning"] = tuning.bench_tuning(settings, quick)
    write_json(out / f"{name}.json", report)
    (out / f"{name}.md").write_text(render_markdown(report), encoding="utf-8")
    return Outcome(report, [summary_lines(report), f"wrote {out / (name + '.md')} and {name}.json"])


def render_markdown(report: dict) -> str:
    m = report.get("machine", {})
    bw = m.get("bandwidth", {})
    lines = ["# `rag bench` results", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('ram_gb', '?')} GB RAM; "
             f"memory copy bandwidth {bw.get('copy_gbs_1t', '?')} GB/s (1 thread), {bw.get('copy_gbs_2t', '?')} GB/s "
             f"(2 threads). Run {m.get('date', '?')}, load average {m.get('loadavg', '?')}.", "",
             "The machine is shared: *other load* is the CPU (in cores) other processes used during a "
             "measurement. A busy core slows llama.cpp with 2 threads disproportionately (its threads wait for "
             "each other after every operation); with `threads=0` (auto) the generator then uses fewer threads.", ""]
    if report.get("generation"):
        lines += generation.markdown(report["generation"])
    if report.get("tuning"):
        lines += tuning.markdown(report["tuning"])
    if report.get("retrieval"):
        lines += retrieval.markdown(report["retrieval"])
    return "\n".join(lines)


def summary_lines(report: dict) -> str:
    """The headline numbers for the terminal."""
    out = generation.summary_lines(report.get("generation") or {})
    if report.get("retrieval"):
        out += retrieval.summary_lines(report["retrieval"])
    return "\n".join(out)
