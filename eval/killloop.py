#!/usr/bin/env python3
"""Kill loop (reliability checklist 6.2 F1/F2): SIGKILL `rag index` at random points, again and again.

    python eval/killloop.py --runs 100            # the full loop; report under eval/results/
    python eval/killloop.py --runs 10 --no-report # quick (CI runs a reduced loop from tests/test_faults.py)

Each run changes the corpus (adds one note, sometimes edits or deletes an older one), starts the real
`rag index` code path in a child process (rag.cli.main -> Assistant.build -> build_index ->
write_generation, with the hashed-bigram fake embedder from tests/fakes.py so a build takes a second),
and kills it with SIGKILL either after a random delay or just before its k-th filesystem step
(fsync / rename / replace, k random). Then it checks what a user would see:

  * CURRENT names a complete generation: manifest, checksums and chunk counts verify, and a search
    answers. Anything else counts as a corruption (must be 0);
  * the served generation is the previous one, or the new one only when the kill came after the swap;
  * the next build succeeds, serves the new note, and leaves no *.tmp behind.

`--child ...` is the driver the loop (and tests/test_faults.py) start; it is not meant for people.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

FS_STEPS = ("fsync", "rename", "replace")


# ---------------------------------------------------------------- the child: the real `rag index` with a fake embedder

def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="killloop --child")
    p.add_argument("--corpus", required=True)
    p.add_argument("--index-dir", required=True)
    p.add_argument("--die-at", type=int, default=0, help="SIGKILL itself just before the k-th fsync/rename/replace")
    p.add_argument("--trace", action="store_true", help="print every fsync/rename/replace to stderr")
    p.add_argument("--fsize", type=int, default=0, help="RLIMIT_FSIZE in bytes (a disk that fills up)")
    p.add_argument("--slow", type=float, default=0.0, help="seconds per embedding batch (a long build)")
    p.add_argument("--rebuild", action="store_true")
    args = p.parse_args(argv)

    import resource

    from rag import cli
    from rag.assistant import Assistant
    from rag.config import Settings
    from rag.fakes import FakeEmbedder

    class Embedder(FakeEmbedder):
        def embed_documents(self, texts, progress=False):
            print("embedding", flush=True)
            time.sleep(args.slow)
            return super().embed_documents(texts, progress)

    steps = {"n": 0}

    def hook(name, real):
        def wrapped(*a, **k):
            steps["n"] += 1
            if args.trace:
                print(f"step {steps['n']} {name} {a[0] if name != 'fsync' else ''}", file=sys.stderr, flush=True)
            if steps["n"] == args.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        return wrapped

    if args.die_at or args.trace:
        for name in FS_STEPS:
            setattr(os, name, hook(name, getattr(os, name)))
    if args.fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, args.fsize))
    # Load the libraries first, so the kill delays spread over the build itself, not over start-up.
    import jieba
    import langchain_text_splitters  # noqa: F401

    jieba.setLogLevel(60)
    jieba.initialize()
    print("ready", flush=True)
    settings = Settings(corpus_dir=Path(args.corpus), index_dir=Path(args.index_dir), embedder="fake",
                        chunk_kv="off")  # the index's write path only: no LLM warm-up of the chunk KV caches
    a = Assistant(settings, embedder=Embedder(), warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    return cli.main(["index"] + (["--rebuild"] if args.rebuild else []), assistant=a)


def child_cmd(corpus: Path, index_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", "--corpus", str(corpus),
            "--index-dir", str(index_dir), *extra]


def run_child(corpus: Path, index_dir: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(child_cmd(corpus, index_dir, *extra), capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- checks

def served(index_dir: Path, probe: str | None = None) -> tuple[str | None, str | None]:
    """(live generation name, problem or None). The problem is what a user would hit."""
    from rag.config import Settings
    from rag.assistant import Assistant
    from rag.errors import RagError
    from rag.generations import current_generation
    from rag.index import load_index

    try:
        gen = current_generation(index_dir)
        if gen is None:
            return None, "no CURRENT"
        idx = load_index(index_dir, "fake")
        a = Assistant.from_settings(Settings(corpus_dir=index_dir, index_dir=index_dir, embedder="fake"))
        hits = a.search(probe or "测试的时候要用 dropout 吗", 3).hits
        if not hits:
            return gen.name, "search returned nothing"
        if probe and not any(probe in h.chunk.text for h in hits):
            return gen.name, f"new note not retrievable: {probe}"
        return idx.path.name, None
    except RagError as e:
        return None, f"{type(e).__name__}: {e}"
    except Exception as e:  # anything else is a crash a user would see
        return None, f"crash {type(e).__name__}: {e}"


def leftovers(index_dir: Path) -> list[str]:
    return sorted(p.name for p in index_dir.iterdir() if p.name.endswith(".tmp"))


def mutate(corpus: Path, i: int, rng: random.Random) -> str:
    """Add a note with a phrase only it contains; sometimes also edit or delete an earlier one."""
    phrase = f"第{i}号探针短语{rng.randrange(10**6):06d}"
    (corpus / f"run-{i:04d}.md").write_text(f"# 探针 {i}\n\n1. 探针问题 {i}?\n{phrase}，这是第 {i} 次运行写入的笔记。\n",
                                            encoding="utf-8")
    older = sorted(corpus.glob("run-*.md"))[:-1]
    if older and rng.random() < 0.3:
        victim = rng.choice(older)
        if rng.random() < 0.5:
            victim.unlink()
        else:
            victim.write_text(victim.read_text(encoding="utf-8") + "补充一句。\n", encoding="utf-8")
    return phrase


# ---------------------------------------------------------------- the loop

def measure(corpus: Path, index_dir: Path) -> tuple[float, int]:
    """Seconds from 'ready' to exit of a full build, and its number of filesystem steps."""
    proc = subprocess.Popen(child_cmd(corpus, index_dir, "--trace", "--rebuild"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    t_ready = time.monotonic()
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"baseline build failed ({proc.returncode}): {err[-2000:]}")
    return time.monotonic() - t_ready, sum(1 for line in err.splitlines() if line.startswith("step "))


def loop(runs: int, seed: int = 0, workdir: Path | None = None, log=print) -> dict:
    from rag.assistant import Assistant  # noqa: F401 - import once here so per-run checks are fast

    rng = random.Random(seed)
    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="killloop-"))
    corpus, index_dir = work / "corpus", work / "index"
    shutil.copytree(ROOT / "corpus", corpus)
    res = run_child(corpus, index_dir)
    if res.returncode != 0:
        raise SystemExit(f"initial build failed: {res.stderr[-2000:]}")
    build_s, n_steps = measure(corpus, index_dir)
    log(f"baseline: build {build_s:.2f}s after start-up, {n_steps} filesystem steps")
    stats = {"runs": 0, "killed_by_time": 0, "killed_at_step": 0, "finished_before_kill": 0, "failed_without_kill": 0,
             "served_previous": 0, "served_new": 0, "tmp_left_after_kill": 0, "corruptions": 0,
             "failed_next_builds": 0, "tmp_left_after_next_build": 0, "kill_delays": [], "steps_hit": [],
             "problems": []}
    t_start = time.monotonic()
    for i in range(runs):
        phrase = mutate(corpus, i, rng)
        before, problem = served(index_dir)
        if problem:
            raise SystemExit(f"run {i}: index bad before the kill: {problem}")
        by_step = rng.random() < 0.5
        extra = ["--die-at", str(rng.randint(1, n_steps))] if by_step else []
        proc = subprocess.Popen(child_cmd(corpus, index_dir, *extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        if not by_step:
            delay = rng.uniform(0, build_s * 1.1)
            stats["kill_delays"].append(round(delay, 3))
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        else:
            stats["steps_hit"].append(int(extra[1]))
        _, err = proc.communicate(timeout=300)
        killed = proc.returncode == -signal.SIGKILL
        stats["runs"] += 1
        if not killed and proc.returncode == 0:
            stats["finished_before_kill"] += 1
        elif not killed:  # the build itself failed: a bug, not a kill
            stats["failed_without_kill"] += 1
            stats["problems"].append(f"run {i}: build failed without a kill (rc={proc.returncode}): {err[-300:]}")
        else:
            stats["killed_at_step" if by_step else "killed_by_time"] += 1
        stats["tmp_left_after_kill"] += bool(leftovers(index_dir))
        after, problem = served(index_dir)
        if problem:
            stats["corruptions"] += 1
            stats["problems"].append(f"run {i} after kill: {problem}")
        elif after == before:
            stats["served_previous"] += 1
        else:  # the kill came after the swap; the new generation verified above
            stats["served_new"] += 1
        # the next run must succeed and serve the new note
        res = run_child(corpus, index_dir)
        gen, problem = served(index_dir, probe=phrase)
        if res.returncode != 0 or problem:
            stats["failed_next_builds"] += 1
            stats["problems"].append(f"run {i} next build: rc={res.returncode} {problem or res.stderr[-300:]}")
        if leftovers(index_dir):
            stats["tmp_left_after_next_build"] += 1
            stats["problems"].append(f"run {i}: left {leftovers(index_dir)}")
        if (i + 1) % 10 == 0 or i + 1 == runs:
            log(f"{i + 1}/{runs}: corruptions {stats['corruptions']}, failed next builds {stats['failed_next_builds']}")
    stats["seconds"] = round(time.monotonic() - t_start, 1)
    stats["baseline_build_seconds"] = round(build_s, 3)
    stats["filesystem_steps_per_build"] = n_steps
    if stats["kill_delays"]:
        stats["kill_delay_median"] = round(statistics.median(stats["kill_delays"]), 3)
    if own:
        shutil.rmtree(work, ignore_errors=True)
    return stats


def report_md(s: dict) -> str:
    return "\n".join([
        "# Kill loop (checklist 6.2 F1/F2)",
        "",
        f"`python eval/killloop.py --runs {s['runs']}` — SIGKILL of the real `rag index` write path "
        f"(fake embedder), half the runs after a random delay in [0, 1.1 × build time], half just before "
        f"a random one of the {s['filesystem_steps_per_build']} fsync/rename/replace steps of a build.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| runs | {s['runs']} |",
        f"| killed after a random delay | {s['killed_by_time']} |",
        f"| killed just before a filesystem step | {s['killed_at_step']} |",
        f"| finished (exit 0) before the kill | {s['finished_before_kill']} |",
        f"| failed without being killed | {s['failed_without_kill']} |",
        f"| previous generation served after the kill | {s['served_previous']} |",
        f"| new generation served (build finished, or killed after the swap) | {s['served_new']} |",
        f"| `*.tmp` left by the kill (removed by the next run) | {s['tmp_left_after_kill']} |",
        f"| **corruptions** (CURRENT not loadable, checksum, crash, no answer) | **{s['corruptions']}** |",
        f"| next build failed or new note not retrievable | {s['failed_next_builds']} |",
        f"| `*.tmp` left after the next build | {s['tmp_left_after_next_build']} |",
        f"| baseline build (after start-up) | {s['baseline_build_seconds']} s |",
        f"| wall time | {s['seconds']} s |",
        "",
        *(["Problems:", "", *[f"- {p}" for p in s["problems"]]] if s["problems"] else ["No problems."]),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results")
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args(argv)
    stats = loop(args.runs, args.seed)
    print(json.dumps({k: v for k, v in stats.items() if k not in ("kill_delays", "steps_hit")}, ensure_ascii=False))
    if not args.no_report:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "killloop.json").write_text(json.dumps(stats, ensure_ascii=False, indent=1) + "\n")
        (args.out / "killloop.md").write_text(report_md(stats))
        print(f"report: {args.out / 'killloop.md'}")
    return 0 if not (stats["corruptions"] or stats["failed_next_builds"] or stats["failed_without_kill"]) else 1


if __name__ == "__main__":
    sys.exit(main())
