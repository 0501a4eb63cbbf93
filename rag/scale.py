"""`rag bench scale`: the whole retrieval path on synthetic Chinese corpora of 10k, 100k and 1M chunks.

The corpora are the real notes' sentences recombined (rag.loaders cleans the seed files; each
synthetic Q&A unit is a question sentence as its heading and 2-6 random sentences as its answer),
so word and bigram statistics stay those of the notes. With ~1k seed sentences the vocabulary does
not grow with the corpus: every term's posting list grows linearly with N, which is the hard case
for query latency. Files of 100 units each go through the real `rag index` path (build_index: load,
chunk, embed, vector index, keyword store), so every number is the product's own.

Each phase runs in its own process (python -m rag.scale PHASE ARGS), so the RSS measured after
loading is the loaded index's, not the build's leftovers:
  build    generate the corpus (cached in the work directory) and build the index from scratch
  keyword  load only the keyword legs, run the queries: their load time, latency and RSS
  serve    load the whole index (load_index) and run every leg and the fused search
  add      incremental `rag index` with one new file of 100 units, then with it deleted again
Results: <out>/scale.md, scale.json, scale.png (latency and memory against corpus size).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .errors import RagError

UNITS_PER_FILE = 100
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000,)
N_QUERIES = 200
TARGETS = {"fused_p50_ms": 50, "fused_p95_ms": 150, "load_s": 2.0, "keyword_rss_mb": 1024, "add_file_s": 5.0}
_SENTENCE = re.compile(r"[^。！？；!?\n]+[。！？；!?]?")


def _log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def seed_sentences(corpus_dir: Path) -> tuple[list[str], list[str]]:
    """(question-like sentences, all sentences) of the seed notes, cleaned by the product's loader."""
    from .corpus import scan_sources
    from .loaders import load_file

    sents: list[str] = []
    for sf in scan_sources([corpus_dir]):
        text = load_file(sf.path, sf.source).text
        for s in _SENTENCE.findall(text):
            s = s.strip(" \t#*>-0123456789.、()（）")
            if len(re.findall(r"[\u4e00-\u9fff]", s)) >= 4:
                sents.append(s)
    sents = list(dict.fromkeys(sents))
    questions = [s for s in sents if s.endswith(("？", "?")) and len(s) <= 60]
    if not sents or not questions:
        raise RagError(f"no usable sentences in {corpus_dir}")
    return questions, sents


def synth_file(questions: list[str], sents: list[str], seed: int, units: int = UNITS_PER_FILE) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for j in range(units):
        q = questions[rng.integers(len(questions))]
        body = "".join(sents[i] for i in rng.integers(len(sents), size=int(rng.integers(2, 7))))
        out.append(f"{j + 1}. {q}\n{body}\n")
    return "\n".join(out)


def make_corpus(corpus_dir: Path, seed_dir: Path, n_chunks: int) -> Path:
    """Write n_chunks / UNITS_PER_FILE files (deterministic; kept when already complete)."""
    marker = corpus_dir / ".complete"
    files = max(1, n_chunks // UNITS_PER_FILE)
    if marker.exists() and marker.read_text().strip() == str(files):
        return corpus_dir
    shutil.rmtree(corpus_dir, ignore_errors=True)
    questions, sents = seed_sentences(seed_dir)
    for i in range(files):
        sub = corpus_dir / f"part{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"notes{i:06d}.md").write_text(synth_file(questions, sents, seed=i), encoding="utf-8")
    marker.write_text(str(files))
    return corpus_dir


def queries(n: int = N_QUERIES) -> list[str]:
    from .bench import _retrieval_queries

    return _retrieval_queries(n)


def _leg_latency(kw, leg: str, qs: list[str]) -> dict:
    """p50/p95 of one keyword leg's top-30 search over `qs`, after 5 warm-up queries."""
    for q in qs[:5]:
        kw.legs[leg].search(q, 30)
    ms = []
    for q in qs:
        t = time.perf_counter()
        kw.legs[leg].search(q, 30)
        ms.append((time.perf_counter() - t) * 1e3)
    return _pcts(ms)


def _pcts(ms: list[float]) -> dict:
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2),
            "mean": round(float(np.mean(ms)), 2)}


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def _settings(args: dict):
    from .config import Settings

    return Settings.from_env(corpus_dir=Path(args["corpus"]), index_dir=Path(args["index"]))


def _embedder(settings):
    from .embedders import load_embedder

    return load_embedder(settings.embedder, settings.cache_dir)


# ---------------------------------------------------------------- phases (each in its own process)

def phase_build(args: dict) -> dict:
    from .corpus import scan_sources
    from .index import build_index

    settings = _settings(args)
    t = time.perf_counter()
    make_corpus(settings.corpus_dir, Path(args["seed"]), args["n"])
    gen_s = time.perf_counter() - t
    emb = _embedder(settings)
    shutil.rmtree(settings.index_dir, ignore_errors=True)
    t = time.perf_counter()
    report = build_index(scan_sources([settings.corpus_dir]), settings.index_dir, settings.embedder, lambda: emb,
                         rebuild=True, warn=_log)
    build_s = time.perf_counter() - t
    return {"chunks": report.chunks, "files": len(report.added), "corpus_s": round(gen_s, 1),
            "build_s": round(build_s, 1), "build_stages_s": {k: round(v, 1) for k, v in report.timings.items()},
            "peak_rss_mb": round(_peak_rss_mb())}


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_keyword(args: dict) -> dict:
    """The keyword legs alone: what loading them costs and what they hold in memory after queries."""
    from .index import CHUNKS_DB, current_generation, read_docids, read_manifest
    from .keyword_index import KeywordIndex
    from .lexical import tokenize

    index_dir = Path(args["index"])
    tokenize("预热 jieba 的词典")  # jieba's dictionary (~50 MB) is the analyzer's, not the index's
    qs = queries()
    base = rss_mb()
    t = time.perf_counter()
    gen = current_generation(index_dir)
    manifest = read_manifest(gen)
    kw = KeywordIndex(index_dir / manifest["keyword"]["dir"], read_docids(gen / CHUNKS_DB))
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    lat = {leg: _leg_latency(kw, leg, qs) for leg in ("jieba", "bigram")}
    return {"keyword_load_s": round(load_s, 3), "keyword_rss_mb_after_load": round(after_load - base, 1),
            "keyword_rss_mb_after_queries": round(rss_mb() - base, 1), "latency_ms": lat,
            "keyword_documents": kw.num_documents()}


def phase_serve(args: dict) -> dict:
    """The whole index as `rag ask` loads it; every leg and the fused search."""
    from .index import load_index
    from .retriever import Retriever

    settings = _settings(args)
    emb = _embedder(settings)
    emb.embed_query("预热")
    from .lexical import tokenize

    tokenize("预热 jieba 的词典")
    qs = queries()
    base = rss_mb()
    t = time.perf_counter()
    idx = load_index(settings.index_dir, settings.embedder)
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    r = Retriever(idx, emb, candidates=settings.candidates, rrf_k=settings.rrf_k)
    for q in qs[:5]:
        r.search(q, settings.top_k)
    lat: dict[str, list[float]] = {"embed": [], "dense": [], "fused": [], "bm25 (both keyword legs)": []}
    for q in qs:
        t = time.perf_counter()
        v = emb.embed_query(q)
        t1 = time.perf_counter()
        idx.vectors.search(v[None, :], settings.candidates)
        t2 = time.perf_counter()
        r.search(q, settings.top_k)
        t3 = time.perf_counter()
        r.search(q, settings.top_k, mode="bm25")
        t4 = time.perf_counter()
        lat["embed"].append((t1 - t) * 1e3)
        lat["dense"].append((t2 - t1) * 1e3)
        lat["fused"].append((t3 - t2) * 1e3)
        lat["bm25 (both keyword legs)"].append((t4 - t3) * 1e3)
    vp = idx.manifest["vector_index"]
    gen = idx.path
    return {"load_s": round(load_s, 3), "rss_mb_index_after_load": round(after_load - base, 1),
            "rss_mb_index_after_queries": round(rss_mb() - base, 1), "rss_mb_process": round(rss_mb(), 1),
            "latency_ms": {k: _pcts(v) for k, v in lat.items()},
            "vector_index": vp.get("factory", vp.get("kind")),
            "disk_mb": {"chunks.sqlite (text + fp32 vectors)": round((gen / "chunks.sqlite").stat().st_size / 2**20, 1),
                        "vector index": round((gen / vp.get("artifact", "vectors.faiss")).stat().st_size / 2**20, 1),
                        "keyword store": round(_dir_bytes(idx.bm25.path) / 2**20, 1)}}


WHOLE_ADD_MAX = 100_000  # above this the add phase times the keyword store alone (see phase_add)


def phase_add(args: dict) -> dict:
    """One file of 100 chunks added, then deleted. Up to WHOLE_ADD_MAX chunks through `rag index`;
    above, only the keyword store's part (what build_index's update_keywords does for that file): a
    whole incremental build rewrites the generation's chunk store and rebuilds its vector index, which
    at 1M costs minutes of CPU per run and is measured, per chunk, at 100k."""
    from .corpus import scan_sources
    from .index import build_index

    settings = _settings(args)
    questions, sents = seed_sentences(Path(args["seed"]))
    if args["n"] > WHOLE_ADD_MAX:
        return {"keyword_store_only": _keyword_add(settings.index_dir, synth_file(questions, sents, seed=10**9))}
    emb = _embedder(settings)
    extra = settings.corpus_dir / "added-file.md"
    extra.write_text(synth_file(questions, sents, seed=10**9), encoding="utf-8")
    out = {}
    try:
        for label in ("add", "delete"):
            if label == "delete":
                extra.unlink()
            t = time.perf_counter()
            report = build_index(scan_sources([settings.corpus_dir]), settings.index_dir, settings.embedder,
                                 lambda: emb, warn=_log)
            out[label] = {"total_s": round(time.perf_counter() - t, 2),
                          "stages_s": {k: round(v, 2) for k, v in report.timings.items()},
                          "embedded": report.embedded, "chunks": report.chunks}
    finally:
        extra.unlink(missing_ok=True)
    return out


def _keyword_add(index_dir: Path, text: str) -> dict:
    """Add one file's chunks to the live keyword store and delete them again, as update_keywords does
    (the same KeywordWriter calls and commits; the documents get docids past the live next_docid, so
    the live generation never sees them and the next build would clean them up anyway)."""
    import tempfile

    from .chunking import chunk_document
    from .index import current_generation, read_manifest
    from .keyword_index import KeywordWriter
    from .loaders import load_file

    kw = read_manifest(current_generation(index_dir))["keyword"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "added-file.md").write_text(text, encoding="utf-8")
        texts = [c.embed_text() for c in chunk_document(load_file(Path(tmp) / "added-file.md", "added-file.md"))]
    first = int(kw["next_docid"]) + 1_000_000
    docids = list(range(first, first + len(texts)))
    t = time.perf_counter()
    w = KeywordWriter(index_dir / kw["dir"])
    w.add(docids, texts)
    w.commit()
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    w = KeywordWriter(index_dir / kw["dir"])
    w.delete(docids)
    w.commit()
    return {"chunks": len(texts), "add_s": round(add_s, 2), "delete_s": round(time.perf_counter() - t, 2)}


def phase_one_leg(args: dict) -> dict:
    """The keyword store alone at args["n"] units for one leg (args["leg"]): build, load, RSS, latency
    and one file added. For when the full build does not fit in the time at hand: the jieba leg's
    tokenization is ~20x the bigram leg's. Units are read from the corpus files as written."""
    import numpy as np

    from .keyword_index import KeywordIndex, KeywordWriter
    from .lexical import tokenize

    leg, corpus, work = args["leg"], Path(args["corpus"]), Path(args["index"])
    make_corpus(corpus, Path(args["seed"]), args["n"])
    units = [u for f in sorted(corpus.rglob("*.md")) for u in f.read_text(encoding="utf-8").split("\n\n") if u.strip()]
    path = work / f"keyword-{leg}-only"
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    w = KeywordWriter(path, create=True)
    for start in range(0, len(units), 100_000):
        w.add(range(start, min(start + 100_000, len(units))), units[start:start + 100_000], legs=(leg,))
    w.commit()
    build_s = time.perf_counter() - t
    tokenize("预热 jieba 的词典")
    qs = queries()
    base = rss_mb()
    t = time.perf_counter()
    kw = KeywordIndex(path, np.arange(len(units)))
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    latency = _leg_latency(kw, leg, qs)
    questions, sents = seed_sentences(Path(args["seed"]))
    extra = [u for u in synth_file(questions, sents, seed=10**9).split("\n\n") if u.strip()]
    ids = range(len(units) + 1_000_000, len(units) + 1_000_000 + len(extra))
    t = time.perf_counter()
    w = KeywordWriter(path)
    w.add(ids, extra, legs=(leg,))
    w.commit()
    add_s = time.perf_counter() - t
    return {"leg": leg, "documents": len(units), "build_s": round(build_s, 1), "load_s": round(load_s, 3),
            "rss_mb_after_load": round(after_load - base, 1), "rss_mb_after_queries": round(rss_mb() - base, 1),
            "latency_ms": latency, "add_file_s": round(add_s, 2), "disk_mb": round(_dir_bytes(path) / 2**20, 1)}


PHASES = {"build": phase_build, "keyword": phase_keyword, "serve": phase_serve, "add": phase_add,
          "one_leg": phase_one_leg}


def run_phase(name: str, args: dict) -> dict:
    """Run one phase in a fresh Python process; its last stdout line is the JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "rag.scale", name, json.dumps(args)], env=env,
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RagError(f"scale phase {name} failed (exit {proc.returncode}) for {args}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- driver and report

def _size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k" if n >= 1000 else str(n)


def main(args, settings) -> int:
    quick = bool(getattr(args, "quick", False))
    out = Path(getattr(args, "out", None) or "eval/results")
    work = Path(getattr(args, "work", None) or os.environ.get("RAG_SCALE_WORK") or "test-artifacts/scale")
    sizes = [int(float(s.lower().replace("k", "e3").replace("m", "e6")))
             for s in (getattr(args, "sizes", None) or "").split(",") if s] or list(QUICK_SIZES if quick else SIZES)
    name = "scale_quick" if quick else "scale"
    path = out / f"{name}.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("sizes", {})
    report["machine"] = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "embedder": settings.embedder,
                         "load_start": round(os.getloadavg()[0], 2)}
    seed = Path(settings.corpus_dir).resolve()
    for n in sizes:
        label = _size_label(n)
        args_ = {"n": n, "seed": str(seed), "corpus": str(work / f"corpus-{label}"), "index": str(work / f"index-{label}")}
        res = report["sizes"].setdefault(label, {"n_target": n})
        for phase in ("build", "keyword", "serve", "add"):
            if phase == "build" and getattr(args, "reuse", False) and res.get("build") and (Path(args_["index"]) / "CURRENT").exists():
                continue
            _log(f"{label}: {phase}")
            res[phase] = run_phase(phase, args_)
            _log(f"{label}: {phase} -> {json.dumps(res[phase], ensure_ascii=False)[:300]}")
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(render(report), encoding="utf-8")
    plot(report, out / f"{name}.png")
    print(f"wrote {out / name}.md, .json, .png")
    return 0


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ok(value, target, lower_is_better: bool = True) -> str:
    if value is None:
        return "—"
    return "✅" if (value <= target if lower_is_better else value >= target) else "❌"


def _kw_add(a: dict):
    return _get(a, "add", "stages_s", "keywords") if "add" in a else _get(a, "keyword_store_only", "add_s")


def render(report: dict) -> str:
    m = report["machine"]
    sizes = sorted(report["sizes"].items(), key=lambda kv: kv[1]["n_target"])
    lines = [f"# Retrieval at scale: {', '.join(label for label, _ in sizes)} chunks", "",
             f"{m['date']}, {m['cpus']} CPU cores (shared; load average at start {m['load_start']}), embedder "
             f"`{m['embedder']}`. Produced by `nice -n 15 rag bench scale` (rag/scale.py): synthetic Chinese corpora "
             "made of the seed notes' sentences recombined into Q&A units of 100 per file, indexed by the real "
             "`rag index` path; every phase in a fresh process. Queries: the retrieval eval set's questions "
             f"({N_QUERIES}, k = 5 fused from 30 per leg). Latencies in ms.", "",
             "| chunks | build | keyword load | keyword RSS | index load | index RSS | jieba p50/p95 | bigram p50/p95 | "
             "dense p50/p95 (incl. embedding) | **fused p50/p95** | add 1 file: keyword store / whole `rag index` | "
             "disk: keyword / vectors / chunks |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in sizes:
        if not r.get("build"):
            continue  # not built in full (see the one-leg table)
        b, k, s, a = r.get("build", {}), r.get("keyword", {}), r.get("serve", {}), r.get("add", {})
        lat = lambda d, leg: (f"{_get(d, 'latency_ms', leg, 'p50')} / {_get(d, 'latency_ms', leg, 'p95')}"
                              if _get(d, "latency_ms", leg) else "—")
        dense = "—"
        if _get(s, "latency_ms", "dense"):
            dense = (f"{round(s['latency_ms']['dense']['p50'] + s['latency_ms']['embed']['p50'], 2)} / "
                     f"{round(s['latency_ms']['dense']['p95'] + s['latency_ms']['embed']['p95'], 2)}")
        disk = s.get("disk_mb", {})
        lines.append(
            f"| {b.get('chunks', r['n_target']):,} | {b.get('build_s', '—')} s | {k.get('keyword_load_s', '—')} s | "
            f"{k.get('keyword_rss_mb_after_queries', '—')} MB | {s.get('load_s', '—')} s | "
            f"{s.get('rss_mb_index_after_queries', '—')} MB | {lat(k, 'jieba')} | {lat(k, 'bigram')} | {dense} | "
            f"**{lat(s, 'fused')}** | {_kw_add(a)} s / {_get(a, 'add', 'total_s') or '—'} s | "
            f"{disk.get('keyword store', '—')} / {disk.get('vector index', '—')} / "
            f"{disk.get('chunks.sqlite (text + fp32 vectors)', '—')} MB |")
    measured = [(label, r) for label, r in sizes if r.get("serve")] or sizes
    big_label, big = measured[-1]
    s, k, a = big.get("serve", {}), big.get("keyword", {}), big.get("add", {})
    checks = [("fused p50", _get(s, "latency_ms", "fused", "p50"), TARGETS["fused_p50_ms"], "ms"),
              ("fused p95", _get(s, "latency_ms", "fused", "p95"), TARGETS["fused_p95_ms"], "ms"),
              ("index load", s.get("load_s"), TARGETS["load_s"], "s"),
              ("keyword-leg RSS", k.get("keyword_rss_mb_after_queries"), TARGETS["keyword_rss_mb"], "MB"),
              ("add one file (keyword store)", _kw_add(a), TARGETS["add_file_s"], "s"),
              ("add one file (whole `rag index`)", _get(a, "add", "total_s"), TARGETS["add_file_s"], "s")]
    lines += ["", f"## Targets at {big_label}", "", "| what | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {w} | {v if v is not None else '—'} {u} | ≤ {t} {u} | {_ok(v, t)} |" for w, v, t, u in checks]
    lines += ["", "## Build stages (seconds)", "", "| chunks | read+chunk | embed | keyword store | chunk store + vector index + manifest | "
              "vector index | peak RSS of the build |", "|---|---|---|---|---|---|---|"]
    for label, r in sizes:
        if not r.get("build"):
            continue
        st = _get(r, "build", "build_stages_s") or {}
        lines.append(f"| {label} | {st.get('read', '—')} | {st.get('embed', '—')} | {st.get('keywords', '—')} | "
                     f"{st.get('write', '—')} | `{_get(r, 'serve', 'vector_index') or '—'}` | {_get(r, 'build', 'peak_rss_mb')} MB |")
    lines += ["", "## Incremental `rag index` (one file of 100 chunks added, then deleted)", "",
              "| chunks | add: total | keyword store | embed | rewrite chunk store + vector index | delete: total | keyword store |",
              "|---|---|---|---|---|---|---|"]
    for label, r in sizes:
        a = r.get("add", {})
        if not a:
            continue
        if "add" not in a:
            lines.append(f"| {label} | — | {_kw_add(a)} s (delete {_get(a, 'keyword_store_only', 'delete_s')} s) "
                         "| — | — | — | — |")
            continue
        lines.append(f"| {label} | {_get(a, 'add', 'total_s')} s | {_get(a, 'add', 'stages_s', 'keywords')} s | "
                     f"{_get(a, 'add', 'stages_s', 'embed')} s | {_get(a, 'add', 'stages_s', 'write')} s | "
                     f"{_get(a, 'delete', 'total_s')} s | {_get(a, 'delete', 'stages_s', 'keywords')} s |")
    one = [(label, r[key]) for label, r in sizes for key in ("one_leg", "one_leg_jieba", "one_leg_bigram") if r.get(key)]
    if one:
        lines += ["", "## The keyword store alone, one leg (`python -m rag.scale one_leg`)", "",
                  "| documents | leg | build | load | RSS after queries | p50 / p95 ms | add 1 file (100 chunks) | disk |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {o['documents']:,} | {o['leg']} | {o['build_s']} s | {o['load_s']} s | {o['rss_mb_after_queries']} MB | "
                  f"{o['latency_ms']['p50']} / {o['latency_ms']['p95']} | {o['add_file_s']} s | {o['disk_mb']} MB |"
                  for _, o in one]
    lines += ["", "## Reading it", ""] + report.get("notes", []) + [""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(report["sizes"].values(), key=lambda r: r["n_target"])
    n = [_get(r, "build", "chunks") or r["n_target"] for r in sizes]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, src in (("fused", "fused (hybrid, k=5)", "serve"), ("jieba", "jieba-word BM25", "keyword"),
                            ("bigram", "bigram BM25", "keyword"), ("dense", "dense search (no embedding)", "serve")):
        for q, style in (("p50", "-o"), ("p95", ":x")):
            ys = [_get(r, src, "latency_ms", key, q) for r in sizes]
            if any(y is not None for y in ys):
                ax1.plot(n, [y if y is not None else np.nan for y in ys], style, label=f"{label} {q}")
    for leg, style in (("jieba", "^"), ("bigram", "v")):  # the one-leg runs (keyword store alone)
        pts = [(r["one_leg"]["documents"], r["one_leg"]["latency_ms"]) for r in sizes
               if _get(r, "one_leg", "leg") == leg] + [(r["one_leg_" + leg]["documents"], r["one_leg_" + leg]["latency_ms"])
                                                      for r in sizes if r.get("one_leg_" + leg)]
        for x, l in pts:
            ax1.plot([x], [l["p50"]], style, color="black", label=f"{leg} leg alone p50")
            ax1.plot([x], [l["p95"]], style, color="grey", label=f"{leg} leg alone p95")
    ax1.axhline(TARGETS["fused_p50_ms"], color="grey", lw=0.8, ls="--")
    ax1.set(xscale="log", yscale="log", xlabel="chunks", ylabel="ms per query", title="query latency")
    ax1.legend(fontsize=7)
    for key, label, src in (("keyword_rss_mb_after_queries", "keyword legs RSS", "keyword"),
                            ("rss_mb_index_after_queries", "whole index RSS", "serve")):
        ax2.plot(n, [_get(r, src, key) or np.nan for r in sizes], "-o", label=label)
    for key, label in (("keyword store", "keyword store on disk"), ("vector index", "vector index on disk")):
        ax2.plot(n, [_get(r, "serve", "disk_mb", key) or np.nan for r in sizes], "--s", label=label)
    for r in sizes:
        for key in ("one_leg", "one_leg_jieba", "one_leg_bigram"):
            o = r.get(key)
            if o:
                ax2.plot([o["documents"]], [o["rss_mb_after_queries"]], "^", label=f"{o['leg']} leg alone RSS")
                ax2.plot([o["documents"]], [o["disk_mb"]], "s", mfc="none", label=f"{o['leg']} leg alone on disk")
    ax2.axhline(TARGETS["keyword_rss_mb"], color="grey", lw=0.8, ls="--")
    ax2.set(xscale="log", yscale="log", xlabel="chunks", ylabel="MB", title="memory and disk")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    _phase, _args = sys.argv[1], json.loads(sys.argv[2])
    _result = PHASES[_phase](_args)
    print(json.dumps(_result, ensure_ascii=False))
