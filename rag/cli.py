"""`rag` command line. Heavy libraries are imported inside commands so `rag --help` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import GenerationError, ModelNotInstalled, RagError

SNIPPET = 90


def _progress(**kw):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, leave=False, **kw)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# Settings whose flag only some commands take; every other setting with a flag (rag.config) is common.
PER_COMMAND = ("top_k", "vector_index", "enrich")


def _flagged() -> list[str]:
    from dataclasses import fields

    from .config import Settings, flag_for

    return [f.name for f in fields(Settings) if flag_for(f.name)]


def _add_setting(parser, name: str) -> None:
    """The setting's flag, type, choices and help text, all from rag.config; the value lands in args.<name>."""
    from dataclasses import fields

    from .config import Settings, env_name, flag_for, help_for

    f = next(f for f in fields(Settings) if f.name == name)
    kw = {"dest": name, "help": f"{help_for(name)} (env {env_name(name)})"}
    if f.type == "int":
        kw["type"] = int
    elif f.type == "Path":
        kw["type"] = Path
    if f.metadata["choices"]:
        kw["choices"] = f.metadata["choices"]
    if f.type == "bool":  # --x / --no-x; neither leaves the environment's or the default value
        kw["action"] = argparse.BooleanOptionalAction
    parser.add_argument(flag_for(name), **kw)


def _settings(args):
    from .config import Settings

    return Settings.from_env(**{name: getattr(args, name, None) for name in _flagged()})


def _assistant(args):
    from .assistant import Assistant

    return args.assistant or Assistant.from_settings(_settings(args), progress=_progress, warn=_warn)


def _snippet(text: str, n: int = SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _queries(args) -> list[str]:
    if args.file:
        try:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise RagError(f"cannot read {args.file}: {e}") from None
        return [line for line in lines if line.strip()]
    if not args.query:
        raise RagError("give a question, or --file with one question per line")
    return [" ".join(args.query)]


# ---------------------------------------------------------------- commands

def _enrich(a, explicit: bool) -> None:
    """doc2query after the build: the index already serves; Ctrl-C keeps every finished chunk. Unless
    asked for with --enrich, a generator that cannot load (or a run already under way) is a warning:
    the index itself was built."""
    from .doc2query import enrich
    from .errors import IndexLocked

    try:
        r = enrich(a.settings.index_dir, a.index().chunks, a.settings.generator, lambda: a.generator,
                   progress=_progress, warn=_warn)
    except KeyboardInterrupt:
        print("\ndoc2query interrupted: the chunks finished so far are kept; `rag index --enrich` resumes",
              file=sys.stderr)
        raise
    except (ModelNotInstalled, IndexLocked) as e:
        if explicit:
            raise
        _warn(f"doc2query skipped: {e} (`--no-enrich` / RAG_ENRICH=0 turns it off)")
        return
    if r.generated:
        print(f"doc2query: generated text for {r.generated} chunks in {r.seconds:.0f}s "
              f"({r.cached} already cached, {r.chunks} in the index; model {r.model})")
    else:
        print(f"doc2query: up to date ({r.chunks} chunks, model {r.model}; {r.seconds:.2f}s)")


def cmd_index(args) -> int:
    a = _assistant(args)
    paths = [Path(p) for p in args.paths] or [a.settings.corpus_dir]
    from .corpus import check_allowed, unsupported_files

    if args.paths and not args.allow_outside:
        # A mistyped path (`/`, `~`, `docs/../..`) must not pull private files into a searchable index.
        check_allowed(paths, [Path.cwd(), a.settings.corpus_dir])

    for p in unsupported_files([p for p in paths if p.exists()]):
        _warn(f"{p}: unsupported type, not indexed")
    report = a.build(paths, rebuild=args.rebuild)
    for source, reason in report.skipped:
        _warn(f"skipped {source}: {reason}")
    if report.up_to_date:
        print(f"index is up to date ({report.chunks} chunks, {len(report.unchanged)} files; {report.seconds:.2f}s)")
    else:
        print(f"indexed {report.chunks} chunks from {len(report.added) + len(report.changed) + len(report.unchanged)} files "
              f"in {report.seconds:.1f}s: {len(report.added)} added, {len(report.changed)} changed, "
              f"{len(report.removed)} removed, {len(report.unchanged)} unchanged; {report.embedded} chunks embedded "
              f"-> {a.settings.index_dir}/{report.generation}")
    if a.settings.chunk_kv == "on":
        _warm_chunk_kv(a)
    if a.settings.enrich:
        _enrich(a, explicit=args.enrich is True)
    return 0


def _warm_chunk_kv(a) -> None:
    """Each chunk's KV cache, read once now so questions need not (resumable: finished ones are kept)."""
    bar = _progress(desc="chunk KV caches", unit="chunk")
    try:
        seen, built = a.warm_chunk_kv(lambda done, total: (setattr(bar, "total", total), bar.update(done - bar.n)))
    except (ModelNotInstalled, GenerationError) as e:  # the index is built; questions build caches on first use
        _warn(f"chunk KV caches skipped: {e}")
        return
    finally:
        bar.close()
    if seen:
        print(f"chunk KV caches: {built} built, {seen - built} already there "
              f"-> {a.settings.cache_dir / 'kv'} (RAG_CHUNK_KV=off skips this)")


def _each(args, key: str, run):
    """(question, run(question)) for each question; with --file a failing one becomes a JSON error line
    and the rest go on."""
    for q in _queries(args):
        try:
            yield q, run(q)
        except RagError as e:
            if not args.file:
                raise
            print(json.dumps({key: q, "error": str(e)}, ensure_ascii=False))


def cmd_search(args) -> int:
    a = _assistant(args)
    for q, r in _each(args, "query", lambda q: a.search(q, args.top_k, mode=args.mode)):
        if args.json or args.file:
            print(json.dumps({"query": r.query, "covered": r.covered, "results": [h.to_dict() for h in r.hits]},
                             ensure_ascii=False), flush=True)
            continue
        print(f"query: {r.query}" + ("" if r.covered else "   (no passage looks relevant)"))
        for i, h in enumerate(r.hits, 1):
            c = h.chunk
            legs = " ".join(x for x in [f"dense={h.dense:.3f}" if h.dense is not None else "",
                                         f"bm25={h.bm25:.2f}" if h.bm25 is not None else ""] if x)
            print(f"{i:>2}. {h.score:.4f}  {c.source}:{c.line}  [{c.start}-{c.end}]  {legs}")
            if c.heading:
                print(f"    Q: {_snippet(c.heading)}")
            print(f"    {_snippet(c.text)}")
    return 0


def _print_sources(ans) -> None:
    if ans.abstained:
        for i, h in enumerate(ans.hits, 1):
            print(f"  ({i}) {h.chunk.source}:{h.chunk.line}  {_snippet(h.chunk.heading or h.chunk.text, 60)}")
        return
    if not ans.sources:
        print("\nSources: none of the passages could be matched to the answer.")
        return
    print("\nSources:")
    for n, h in ans.sources:
        c = h.chunk
        print(f"  [{n}] {c.source}:{c.line}  chars {c.start}-{c.end}  {('Q: ' + c.heading) if c.heading else ''}")
        print(f"      {_snippet(c.text)}")


def _print_evidence(evidence) -> None:
    """The selected evidence, cited, on screen before the model writes anything."""
    if not evidence:
        return
    print("依据 (evidence):")
    for e in evidence:
        print(f"  [{e.n}] {e.source}:{e.line}  {_snippet(e.shown, 100)}")
    print(flush=True)


def _print_corrections(answer) -> None:
    from .verify import correction_notes

    notes = correction_notes(answer, "en")
    if notes:
        print(f"({'; '.join(notes)})")


def _streamed(a, q: str, args, stream: bool):
    """Ask; print the evidence first, then the answer as it streams. (answer, what was printed)"""
    shown, answer = "", None
    for ev in a.ask(q, args.top_k):
        if ev.kind == "retrieved" and not (args.json or args.file):
            if ev.retrieval.translation:
                print(f"searched with the translation: {ev.retrieval.translation}")
            _print_evidence(ev.evidence)
        elif ev.kind == "token" and stream:
            print(ev.text, end="", flush=True)
            shown += ev.text
        elif ev.kind == "done":
            answer = ev.answer
    return answer, shown


def cmd_ask(args) -> int:
    a = _assistant(args)
    stream = not (args.json or args.file) and not args.no_stream
    for q, (answer, shown) in _each(args, "question", lambda q: _streamed(a, q, args, stream)):
        if args.json or args.file:
            print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
            continue
        # What streamed is a checked prefix of the answer: print the rest, or (when the checks changed
        # what was already on screen, or nothing streamed) the whole final answer once.
        if shown and answer.text.startswith(shown.strip()) and not answer.abstained:
            print(answer.text[len(shown.strip()):], end="")
        else:
            if shown:
                print("\n")
            print(answer.text, end="")
        print()
        _print_corrections(answer)
        _print_sources(answer)
        t = answer.timings
        print(f"\n({'retrieval %.2fs' % t.get('retrieval', 0)}"
              + (f", translation {t['translate']:.2f}s" if "translate" in t else "")
              + (f", evidence shown {t['evidence_shown']:.2f}s" if "evidence_shown" in t else "")
              + (f", first token {t['first_token']:.1f}s" if "first_token" in t else "")
              + f", total {t.get('total', 0):.1f}s)", file=sys.stderr)
    return 0


def _feedback_db(args) -> Path:
    from .feedback import default_path

    return Path(args.feedback_db) if args.feedback_db else default_path(_settings(args))


def cmd_eval(args) -> int:
    if args.suite == "feedback":
        from .feedback import FeedbackStore, export

        db = _feedback_db(args)
        if not db.exists():
            raise RagError(f"no feedback database at {db} (rag serve creates it; --feedback-db points elsewhere)")
        out = args.feedback_out
        new, total = export(FeedbackStore(db), out)
        print(f"{new} new 👎 answer(s) → {out} ({total} items to review: fill in source, gold_heading, "
              f"gold_contains and in_corpus, then move the ones you keep into eval/answers.jsonl)")
        return 0
    import os
    import tempfile
    import time

    from .evaluation import report, suites
    from .evaluation.cache import ScoreCache

    base = _assistant(args)
    names = suites.CORE if args.suite == "all" else (args.suite,)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = ScoreCache(None if args.no_cache else base.settings.cache_dir / "eval" / "scores.jsonl")
    options = suites.Options(k=args.top_k, limit=args.limit, every=args.every, answer_set=args.set)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rag-eval-", ignore_cleanup_errors=True) as tmp:
        a = base
        if not (args.index_dir or os.environ.get("RAG_INDEX_DIR")):
            # A throwaway index from the corpus: the numbers describe the current code, corpus and
            # --embedder, never a stale ./index, and the user's index is not touched.
            a = base.derive(index_dir=Path(tmp) / "index")
            t0 = time.perf_counter()
            built = a.build()
            print(f"eval: built a throwaway index ({built.chunks} chunks, embedder {a.settings.embedder}) "
                  f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for name in names:
            t0 = time.perf_counter()
            result = suites.run(name, a, options, cache)
            report.write(args.out, result)
            print(f"{name}: {report.summary(result.kind, result.data)}  ({time.perf_counter() - t0:.1f}s)")
        report.write_index(args.out)
    print(f"eval: {', '.join(names)} in {time.perf_counter() - t_all:.1f}s -> {args.out}/")
    return 0


def cmd_serve(args) -> int:
    from .server import serve

    try:
        serve(_settings(args), host=args.host, port=args.port, stall=args.stall_seconds, budget=args.budget_seconds,
              gradio_api=args.gradio_api, ui=not args.no_ui, feedback_db=_feedback_db(args))
    except KeyboardInterrupt:  # uvicorn has already shut down cleanly (Ctrl-C / SIGTERM)
        print("rag serve: stopped", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .bench.report import parse_sizes

    outcome = bench.run(args.suite, _settings(args), out=args.out, quick=args.quick, sizes=parse_sizes(args.sizes),
                        work=args.work, reuse=args.reuse)
    print("\n".join(outcome.lines))
    return 0


# ---------------------------------------------------------------- parser

def _positive(text: str) -> int:
    """argparse type: a whole number >= 1 (for --limit, --every, --port)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for name in _flagged():
        if name not in PER_COMMAND:
            _add_setting(common, name)
    p = argparse.ArgumentParser(prog="rag", description="Offline, Chinese-first RAG assistant over deep-learning interview notes.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_index_parser, _query_parsers, _eval_parser, _serve_parser, _bench_parser):
        add(sub, common)
    return p


def _index_parser(sub, common) -> None:
    s = sub.add_parser("index", parents=[common], help="build or update the index (incremental by content hash)")
    s.add_argument("paths", nargs="*", help="files or directories (default: the corpus directory)")
    s.add_argument("--rebuild", action="store_true", help="re-embed everything")
    _add_setting(s, "vector_index")
    _add_setting(s, "enrich")
    s.add_argument("--allow-outside", action="store_true",
                   help="index PATHS outside the current directory and the corpus directory")
    s.set_defaults(func=cmd_index)


def _query_parsers(sub, common) -> None:
    for name, func, helptext in [("search", cmd_search, "retrieval only: ranked passages with scores"),
                                 ("ask", cmd_ask, "answer a question with cited passages")]:
        s = sub.add_parser(name, parents=[common], help=helptext)
        s.add_argument("query", nargs="*", help="the question")
        _add_setting(s, "top_k")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.add_argument("--file", help="one question per line; JSON Lines out")
        if name == "search":
            s.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
        else:
            s.add_argument("--no-stream", action="store_true", help="print the answer when complete")
        s.set_defaults(func=func)


def _eval_parser(sub, common) -> None:
    s = sub.add_parser("eval", parents=[common], help="accuracy report (mcq, retrieval, answers; all by default)")
    s.add_argument("suite", nargs="?", default="all",
                   choices=["all", "mcq", "retrieval", "answers", "evidence", "abstain", "mcq-judge", "feedback"],
                   help="feedback: turn 👎 answers from rag serve into draft eval items (--feedback-out)")
    s.add_argument("--set", type=Path, help="answers: a rubric set such as eval/answers_blind.jsonl; retrieval: a question set such as "
                   "eval/retrieval_heldout.jsonl (report named after it)")
    s.add_argument("--limit", type=_positive, help="only the first N items (quick check)")
    s.add_argument("--every", type=_positive, help="answers --set, mcq: every N-th item (a spread subset)")
    s.add_argument("--out", type=Path, default=Path("eval/results"), help="report directory")
    _add_setting(s, "top_k")
    s.add_argument("--no-cache", action="store_true", help="re-score every MCQ option (ignore cached LLM scores)")
    s.add_argument("--feedback-db", type=Path, help="feedback database (default: feedback.sqlite3 next to the "
                   "index directory, env RAG_FEEDBACK_DB)")
    s.add_argument("--feedback-out", type=Path, default=Path("eval/feedback.jsonl"),
                   help="where `rag eval feedback` writes the items to review")
    s.set_defaults(func=cmd_eval)


def _serve_parser(sub, common) -> None:
    s = sub.add_parser("serve", parents=[common], help="OpenAI-compatible API + chat UI on one port")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other address "
                   "needs RAG_API_KEY)")
    s.add_argument("--port", type=_positive, help="port (default: env RAG_PORT, else 8000)")
    s.add_argument("--stall-seconds", type=float, help="end an answer when no token came for this long "
                   "(default 90, env RAG_STALL_SECONDS)")
    s.add_argument("--budget-seconds", type=float, help="time budget of one answer, and of the wait for the "
                   "model (default 300, env RAG_BUDGET_SECONDS)")
    s.add_argument("--gradio-api", action="store_true", help="also open the UI's gradio_client API")
    s.add_argument("--no-ui", action="store_true", help="serve the API only")
    s.add_argument("--feedback-db", type=Path, help="where ratings are stored (default: feedback.sqlite3 next to "
                   "the index directory, env RAG_FEEDBACK_DB)")
    s.set_defaults(func=cmd_serve)


def _bench_parser(sub, common) -> None:
    s = sub.add_parser("bench", parents=[common], help="speed and memory benchmarks")
    s.add_argument("suite", nargs="?", default="all", help="all | generation | retrieval | tuning | ann | answer | scale")
    s.add_argument("--out", type=Path, default=Path("eval/results"), help="report directory")
    s.add_argument("--quick", action="store_true", help="small sizes (for CI)")
    s.add_argument("--sizes", help="scale: corpus sizes in chunks, e.g. 10k,100k,1m")
    s.add_argument("--work", type=Path, help="scale: where synthetic corpora and indexes go (default test-artifacts/scale)")
    s.add_argument("--reuse", action="store_true", help="scale: keep indexes already built by an earlier run")
    s.set_defaults(func=cmd_bench)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, assistant=None) -> int:
    """`assistant`: a ready Assistant to run the command with (tests, embedding); by default one is composed
    from the flags and RAG_* settings."""
    import signal
    import threading

    args = build_parser().parse_args(argv)
    args.assistant = assistant
    # SIGTERM (kill, systemd, docker stop) stops like Ctrl-C: the half-written generation is removed
    # and the lock released at once, instead of leaving both for the next run to clean up.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        return args.func(args)
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted (the previous index, if any, is still serving)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
