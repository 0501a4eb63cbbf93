"""The phases of `rag bench scale`, each run in its own process (`python -m rag.bench.scale_phases PHASE
JSON`) so that the RSS measured after loading is the loaded index's, not the build's leftovers:
  build    generate the corpus (cached in the work directory) and build the index from scratch
  keyword  load only the keyword legs, run the queries: their load time, latency and RSS
  serve    load the whole index as `rag ask` does and run every leg and the fused search
  add      incremental `rag index` with one new file of 100 units, then changed, then deleted again
  one_leg  the keyword store alone, one leg (run by hand: see phase_one_leg)
  add_at_scale  the add phase against assembled stores of n rows (run by hand: see phase_add_at_scale)
A phase's parameters are one JSON object: n (chunks), seed (the seed notes), corpus, index (directories),
embedder (a spec; RAG_EMBEDDER or the default when absent), and leg for one_leg. Its result is the last line on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import RagError
from .questions import retrieval_queries
from .report import latency_ms, logger, peak_rss_mb, rss_mb
from .scale_corpus import make_corpus, seed_sentences, synth_file

N_QUERIES = 200

_log = logger("scale")


def _leg_latency(kw, leg: str, qs: list[str]) -> dict:
    """p50/p95 of one keyword leg's top-30 search over `qs`, after 5 warm-up queries."""
    for q in qs[:5]:
        kw.legs[leg].search(q, 30)
    ms = []
    for q in qs:
        t = time.perf_counter()
        kw.legs[leg].search(q, 30)
        ms.append((time.perf_counter() - t) * 1e3)
    return latency_ms(ms)


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def _assistant(job: dict):
    """This phase's corpus, index and embedder; the other settings from the environment (RAG_*)."""
    from ..assistant import Assistant
    from ..config import Settings

    settings = Settings.from_env(corpus_dir=Path(job["corpus"]), index_dir=Path(job["index"]), embedder=job.get("embedder"))
    return Assistant.from_settings(settings, warn=_log)


def _warm_analyzer() -> None:
    from ..lexical import tokenize

    tokenize("预热 jieba 的词典")  # jieba's dictionary (~50 MB) is the analyzer's, not the index's


def phase_build(job: dict) -> dict:
    from ..corpus import scan_sources
    from ..index import build_index

    a = _assistant(job)
    settings = a.settings
    t = time.perf_counter()
    make_corpus(settings.corpus_dir, Path(job["seed"]), job["n"])
    gen_s = time.perf_counter() - t
    emb = a.embedder
    shutil.rmtree(settings.index_dir, ignore_errors=True)
    t = time.perf_counter()
    report = build_index(scan_sources([settings.corpus_dir]), settings.index_dir, settings.embedder, lambda: emb,
                         rebuild=True, warn=_log)
    build_s = time.perf_counter() - t
    return {"chunks": report.chunks, "files": len(report.added), "corpus_s": round(gen_s, 1),
            "build_s": round(build_s, 1), "build_stages_s": {k: round(v, 1) for k, v in report.timings.items()},
            "peak_rss_mb": round(peak_rss_mb())}


def phase_keyword(job: dict) -> dict:
    """The keyword legs alone: what loading them costs and what they hold in memory after queries."""
    from ..chunk_store import read_docids
    from ..generations import DOCIDS, current_generation, read_manifest
    from ..keyword_index import KeywordIndex

    index_dir = Path(job["index"])
    _warm_analyzer()
    qs = retrieval_queries(N_QUERIES)
    base = rss_mb()
    t = time.perf_counter()
    gen = current_generation(index_dir)
    manifest = read_manifest(gen)
    kw = KeywordIndex(index_dir / manifest["keyword"]["dir"], read_docids(gen / DOCIDS))
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    lat = {leg: _leg_latency(kw, leg, qs) for leg in ("jieba", "bigram")}
    return {"keyword_load_s": round(load_s, 3), "keyword_rss_mb_after_load": round(after_load - base, 1),
            "keyword_rss_mb_after_queries": round(rss_mb() - base, 1), "latency_ms": lat,
            "keyword_documents": kw.num_documents()}


def phase_serve(job: dict) -> dict:
    """The whole index as `rag ask` loads it; every leg and the fused search."""
    a = _assistant(job)
    settings = a.settings
    emb = a.embedder
    emb.embed_query("预热")
    _warm_analyzer()
    qs = retrieval_queries(N_QUERIES)
    base = rss_mb()
    t = time.perf_counter()
    idx = a.index()
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    r = a.retriever()
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
    store = Path(settings.index_dir) / idx.manifest["store"]["dir"]
    segs = sum((store / f).stat().st_size for s in vp.get("segments", []) for f in s.get("files", {}))
    return {"load_s": round(load_s, 3), "rss_mb_index_after_load": round(after_load - base, 1),
            "rss_mb_index_after_queries": round(rss_mb() - base, 1), "rss_mb_process": round(rss_mb(), 1),
            "latency_ms": {k: latency_ms(v) for k, v in lat.items()},
            "vector_index": vp.get("factory", vp.get("kind")),
            "disk_mb": {"chunks.sqlite (text + fp32 vectors)": round((store / "chunks.sqlite").stat().st_size / 2**20, 1),
                        "vector index": round(segs / 2**20, 1),
                        "keyword store": round(_dir_bytes(idx.bm25.path) / 2**20, 1)}}


def phase_add(job: dict) -> dict:
    """One file of 100 chunks added, then changed (one unit appended), then deleted, each through the
    whole incremental `rag index` (build_index), with its stages' times, wall and CPU: the first step
    also pays what every fresh `rag index` process pays once (jieba's dictionary, the text splitter's
    imports: ~1 CPU-second), and on the shared cores wall time is several times the CPU time."""
    from ..corpus import scan_sources
    from ..generations import current_generation, read_manifest
    from ..index import build_index

    a = _assistant(job)
    settings = a.settings
    questions, sents = seed_sentences(Path(job["seed"]))
    emb = a.embedder
    extra = settings.corpus_dir / "added-file.md"
    text = synth_file(questions, sents, seed=10**9)
    out = {}
    try:
        for label in ("add", "change", "delete"):
            if label == "add":
                extra.write_text(text, encoding="utf-8")
            elif label == "change":
                extra.write_text(text + "\n\n" + synth_file(questions, sents, seed=10**9 + 1).split("\n\n")[0], encoding="utf-8")
            else:
                extra.unlink()
            t, cpu = time.perf_counter(), time.process_time()
            report = build_index(scan_sources([settings.corpus_dir]), settings.index_dir, settings.embedder,
                                 lambda: emb, warn=_log)
            segs = read_manifest(current_generation(settings.index_dir))["vector_index"].get("segments", [])
            out[label] = {"total_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - cpu, 2),
                          "load_avg": round(os.getloadavg()[0], 2),
                          "stages_s": {k: round(v, 2) for k, v in report.timings.items()},
                          "embedded": report.embedded, "chunks": report.chunks,
                          "vector_segments": [f"{s['role']}:{s['n']}" for s in segs]}
    finally:
        extra.unlink(missing_ok=True)
    return out


def phase_add_at_scale(job: dict) -> dict:
    """The incremental `rag index` of phase_add against stores of job["n"] rows assembled directly,
    for sizes whose full build does not fit the time at hand (at 1M the keyword legs' tokenization
    alone is ~25 CPU-minutes). Real: the corpus files (hashed by every build), the shared chunk store
    (n rows of seed-sentence text and random unit vectors, as large as the real one), the vector
    base of the kind `auto` picks for n (IVF-SQ8 at 1M), the generation and its docid list. Not
    real: the keyword store holds no documents for those rows, so its part of the add is that of a
    small store; the keyword store's add at 1M is measured by one_leg (0.09 s / 0.15 s per leg).
    The product's own functions assemble it (write_rows, update_vectors, write_generation), then
    build_index adds, changes and deletes one file as in phase_add."""
    import hashlib

    import numpy as np

    from ..chunking import Chunk, ChunkerSettings
    from ..corpus import scan_sources
    from ..generations import (DEFAULT_VECTOR_REQUEST, FORMAT_VERSION, new_store, update_vectors, write_generation,
                               write_lock)
    from ..chunk_store import STORE_DB, write_rows
    from ..index import STAT_TRUST_NS
    from ..keyword_index import KeywordWriter
    from ..keyword_index import fingerprint as keyword_fingerprint

    a = _assistant(job)
    emb = a.embedder
    n, corpus, index_dir = job["n"], Path(job["corpus"]), Path(job["index"])
    t = time.perf_counter()
    make_corpus(corpus, Path(job["seed"]), n)
    sources = sorted(scan_sources([corpus]), key=lambda s: s.source)
    questions, sents = seed_sentences(Path(job["seed"]))
    shutil.rmtree(index_dir, ignore_errors=True)
    rng = np.random.default_rng(0)
    per_file = -(-n // len(sources))
    timings = {"corpus_s": round(time.perf_counter() - t, 1)}
    with write_lock(index_dir):
        t = time.perf_counter()
        store = new_store(index_dir)
        files, docid = {}, 0
        for b in range(0, len(sources), 500):
            rows = []
            for sf in sources[b:b + 500]:
                data, st = sf.path.read_bytes(), sf.path.stat()
                sha = hashlib.sha256(data).hexdigest()
                k = min(per_file, n - docid - len(rows))
                for j in range(k):
                    text = "".join(sents[(docid + len(rows) * 7 + i) % len(sents)] for i in range(3))
                    rows.append(Chunk(f"{sf.source}#{j}", sf.source, questions[j % len(questions)], text, 0, len(text), 1, sha))
                files[sf.source] = {"sha256": sha, "chunks": k, "encoding": "utf-8", "bytes": len(data),
                                    "mtime_ns": st.st_mtime_ns if time.time_ns() - st.st_mtime_ns > STAT_TRUST_NS else None,
                                    "indexed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            v = rng.standard_normal((len(rows), emb.dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            write_rows(index_dir / store / STORE_DB, np.arange(docid, docid + len(rows)), rows, v)
            docid += len(rows)
        timings["chunk_store_s"] = round(time.perf_counter() - t, 1)
        docids = np.arange(docid, dtype=np.int64)
        kw = index_dir / "keyword-assembled"
        w = KeywordWriter(kw, create=True)
        w.commit()
        t = time.perf_counter()
        request = dict(DEFAULT_VECTOR_REQUEST)
        vi = update_vectors(index_dir / store, None, request, emb.dim, docids, docids, None)
        timings["vector_base_s"] = round(time.perf_counter() - t, 1)
        manifest = {"format_version": FORMAT_VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "embedder": {"id": a.settings.embedder, "dim": emb.dim, "fingerprint": getattr(emb, "fingerprint", "")},
                    "chunker": ChunkerSettings().to_dict(), "files": files, "skipped": [],
                    "store": {"dir": store, "next_docid": docid, "removed": []},
                    "keyword": {"dir": kw.name, "fingerprint": keyword_fingerprint(), "next_docid": docid, "removed": []}}
        write_generation(index_dir, manifest, docids, request, vi)
    out = {"rows": docid, "files": len(sources), "assembly": timings, "load_avg_before_add": round(os.getloadavg()[0], 2),
           "vector_index": vi.get("factory", vi["kind"]), "store_mb": round(_dir_bytes(index_dir / store) / 2**20, 1)}
    out.update(phase_add(job))
    return out


def keyword_add(index_dir: Path, text: str) -> dict:
    """Add one file's chunks to the live keyword store and delete them again, as update_keywords does
    (the same KeywordWriter calls and commits; the documents get docids past the live next_docid, so
    the live generation never sees them and the next build would clean them up anyway)."""
    import tempfile

    from ..chunking import chunk_document
    from ..generations import current_generation, read_manifest
    from ..keyword_index import KeywordWriter
    from ..loaders import load_file

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


def phase_one_leg(job: dict) -> dict:
    """The keyword store alone at job["n"] units for one leg (job["leg"]): build, load, RSS, latency
    and one file added. For when the full build does not fit in the time at hand: the jieba leg's
    tokenization is ~20x the bigram leg's. Units are read from the corpus files as written."""
    import numpy as np

    from ..keyword_index import KeywordIndex, KeywordWriter

    leg, corpus, work = job["leg"], Path(job["corpus"]), Path(job["index"])
    make_corpus(corpus, Path(job["seed"]), job["n"])
    units = [u for f in sorted(corpus.rglob("*.md")) for u in f.read_text(encoding="utf-8").split("\n\n") if u.strip()]
    path = work / f"keyword-{leg}-only"
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    w = KeywordWriter(path, create=True)
    for start in range(0, len(units), 100_000):
        w.add(range(start, min(start + 100_000, len(units))), units[start:start + 100_000], legs=(leg,))
    w.commit()
    build_s = time.perf_counter() - t
    _warm_analyzer()
    qs = retrieval_queries(N_QUERIES)
    base = rss_mb()
    t = time.perf_counter()
    kw = KeywordIndex(path, np.arange(len(units)))
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    latency = _leg_latency(kw, leg, qs)
    questions, sents = seed_sentences(Path(job["seed"]))
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
          "one_leg": phase_one_leg, "add_at_scale": phase_add_at_scale}


def run_phase(name: str, job: dict) -> dict:
    """Run one phase in a fresh Python process; its last stdout line is the JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "rag.bench.scale_phases", name, json.dumps(job)], env=env,
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RagError(f"scale phase {name} failed (exit {proc.returncode}) for {job}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in PHASES:
        sys.exit(f"usage: python -m rag.bench.scale_phases {{{','.join(PHASES)}}} JSON")
    print(json.dumps(PHASES[sys.argv[1]](json.loads(sys.argv[2])), ensure_ascii=False))
