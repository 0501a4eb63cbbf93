"""`rag bench ann`: how do you find a new face among 10 million face vectors?

The corpus asks this (LSH, Annoy, tree indexes). This benchmark answers with numbers on synthetic
face-like vectors (rag.bench.ann_data). For each index kind it reports build time, memory
(bytes/vector and peak RSS), QPS for single queries and for a batch, and recall@1/@10 against exact
search, plus a brute-force NumPy baseline and LSH (faiss.IndexLSH).

The 10M set (20 GB as float32) is never held in RAM: it is streamed once; each batch is added
(compressed) to the index and scanned exactly to update the ground truth of the held-out queries, and
recall is measured at checkpoints on the way. `--sizes` runs only the disk-backed design
(rag.bench.ann_disk). Reports: <out>/ann.md, ann.json, ann_recall_qps.png (rag.bench.ann_report).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .ann_data import BATCH, SINGLE_QUERIES, FaceLikeVectors, Run, point, timed, trained_stream
from .ann_report import conclusions, write_report
from .report import Outcome, earlier, logger, peak_rss_mb, rss_bytes

IDENTITIES = 5000

_log = logger("ann")


def index_bytes(index) -> int:
    """Size of the serialised index (~ its memory): written to a temp file, not copied in RAM."""
    import faiss

    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def numpy_search(base: np.ndarray, block: int = 32):
    """Exact search by matrix product, `block` queries at a time: 1000 queries x 1M vectors at once
    would be a 4 GB score matrix (plus temporaries; the first full run peaked at 17 GB RSS here)."""
    def search(q: np.ndarray, k: int):
        out_s, out_i = [], []
        for start in range(0, len(q), block):
            s = q[start:start + block] @ base.T
            part = np.argpartition(s, -k, axis=1)[:, -k:]
            order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
            ids = np.take_along_axis(part, order, 1)
            out_s.append(np.take_along_axis(s, ids, 1))
            out_i.append(ids)
        return np.concatenate(out_s), np.concatenate(out_i)
    return search


def bench_faiss(name: str, dataset: str, make, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                sweep: list[dict], note: str = "", single: int = SINGLE_QUERIES) -> Run:
    """Build with `make()` (returns a rag.vectors index or a raw faiss index), then search at each setting."""
    r0 = rss_bytes()
    t = time.perf_counter()
    vi = make()
    if hasattr(vi, "index"):
        if not vi.ntotal:
            vi.add(base)
        raw = vi.index
    else:
        raw = vi
        if not raw.is_trained:
            raw.train(base[:min(len(base), 100_000)])
        raw.add(base)
    build = time.perf_counter() - t
    delta = rss_bytes() - r0
    size = index_bytes(raw)
    points = []
    for setting in sweep or [{}]:
        if hasattr(vi, "set_search_params"):
            vi.set_search_params(**setting)
        res = timed(lambda q: raw.search(q, 10)[1], queries, single)
        label = ",".join(f"{k}={v}" for k, v in setting.items()) or "-"
        points.append(point(label, res, truth))
        _log(f"{dataset} {name} {label}: R@10={points[-1]['recall@10']:.3f} "
             f"QPS batch={res['qps_batched']:.0f} single={res['qps_single']:.0f}")
    return Run(dataset, len(base), base.shape[1], name, build, size / len(base), size / 2**20, delta / 2**20,
               peak_rss_mb(), points, note)


def _exact(dataset: str, base: np.ndarray, queries: np.ndarray, single: int) -> tuple[Run, np.ndarray]:
    """FAISS Flat: the exact baseline, and the ground truth of every other index. Its vectors (1.5 GB at
    1M x 384) are freed on return, before the next index is built."""
    from ..vectors import FaissFlatIndex

    flat = FaissFlatIndex(base.shape[1])
    run = bench_faiss("flat (exact, FAISS)", dataset, lambda: flat, base, queries,
                      np.zeros((len(queries), 10), np.int64), [], single=single)
    truth = flat.index.search(queries, 10)[1]
    run.points = [dict(p, **{"recall@1": 1.0, "recall@10": 1.0}) for p in run.points]
    return run, truth


SWEEPS = {  # search settings per index kind, from fast/rough to slow/exact
    "hnsw": [{"ef_search": e} for e in (16, 32, 64, 128, 256)],
    "ivf-flat": [{"nprobe": p} for p in (4, 8, 16, 32, 64)],
    "ivf-sq8": [{"nprobe": p} for p in (4, 8, 16, 32, 64)],
    "ivf-pq": [{"nprobe": p, "k_factor": kf} for p, kf in ((8, 4), (16, 8), (32, 8), (64, 16))],
    "opq-ivf-pq": [{"nprobe": p, "k_factor": kf} for p, kf in ((8, 4), (16, 8), (32, 8), (64, 16))],
}


def in_memory_suite(dataset: str, n: int, dim: int, identities: int, nq: int, kinds: list[str],
                    lsh_bits: list[int], numpy_baseline: bool = True, single: int = SINGLE_QUERIES) -> list[Run]:
    """All vectors in RAM (n * dim * 4 bytes): exact ground truth by FAISS Flat."""
    import faiss

    from ..index_sizing import ann_params
    from ..vectors import FaissAnnIndex

    gen = FaceLikeVectors(dim, identities)
    t = time.perf_counter()
    base = gen.database(n)
    queries = gen.queries(nq)
    _log(f"{dataset}: generated {n:,} x {dim} in {time.perf_counter() - t:.1f}s")
    exact, truth = _exact(dataset, base, queries, single)
    runs = [exact]
    if numpy_baseline:
        r0 = rss_bytes()
        search = numpy_search(base)
        res = timed(lambda q: search(q, 10)[1], queries, single)
        runs.append(Run(dataset, n, dim, "brute force (NumPy)", 0.0, 4.0 * dim, n * dim * 4 / 2**20,
                        (rss_bytes() - r0) / 2**20, peak_rss_mb(), [point("-", res, truth)],
                        "matrix product + argpartition; the raw float32 matrix is the index"))
        _log(f"{dataset} numpy: QPS batch={res['qps_batched']:.0f} single={res['qps_single']:.0f}")
    for bits in lsh_bits:
        runs.append(bench_faiss(f"LSH {bits} bits", dataset,
                                lambda: faiss.IndexLSH(dim, bits, True, True), base, queries, truth, [],
                                "random rotation + sign bits, Hamming scan of every code", single=single))
    for kind in kinds:
        p = ann_params(kind, n, dim)
        label = f"{kind} ({FaissAnnIndex(dim, p).params()['factory']})"
        runs.append(bench_faiss(label, dataset, lambda: FaissAnnIndex(dim, p), base, queries, truth, SWEEPS[kind],
                                single=single))
    return runs


def streaming_suite(dataset: str, n: int, dim: int, identities: int, nq: int, factory: str,
                    checkpoints: list[int], budget_s: float, sweep: list[dict], batch: int = BATCH,
                    single: int = SINGLE_QUERIES) -> list[Run]:
    """Never holds the raw vectors: train on a sample, then per batch add codes + update exact top-10."""
    r0, t0 = rss_bytes(), time.perf_counter()
    gen, queries, gt, index, train_s = trained_stream(dataset, n, dim, identities, nq, factory)
    runs: list[Run] = []
    add_s = 0.0
    added = 0
    for b in range(math.ceil(n / batch)):
        x = gen.batch(b, min(batch, n - added))
        t = time.perf_counter()
        index.add(x)
        add_s += time.perf_counter() - t
        gt.update(x, added)
        added += len(x)
        del x
        if added in checkpoints or added == n:
            size = index_bytes(index)
            points = _sweep_ivf(index, sweep, queries, gt.ids, single, f"{dataset} @{added:,}")
            runs.append(Run(dataset, added, dim, factory, train_s + add_s, size / added, size / 2**20,
                            (rss_bytes() - r0) / 2**20, peak_rss_mb(), points,
                            f"streamed; build = train {train_s:.0f}s + add {add_s:.0f}s; "
                            f"wall incl. data generation and exact ground truth {time.perf_counter() - t0:.0f}s"))
            elapsed = time.perf_counter() - t0
            if added < n and elapsed * n / added > budget_s:
                runs[-1].note += (f"; stopped at {added:,}: projected {elapsed * n / added / 60:.0f} min "
                                  f"for {n:,} exceeds the {budget_s / 60:.0f} min budget")
                _log(runs[-1].note)
                break
    return runs


def _sweep_ivf(index, sweep: list[dict], queries: np.ndarray, truth: np.ndarray, single: int, where: str) -> list[dict]:
    """Search a streamed IVF index at each {"nprobe", "k_factor"} setting."""
    import faiss

    points = []
    for setting in sweep:
        ps = faiss.ParameterSpace()
        ps.set_index_parameter(index, "nprobe", setting["nprobe"])
        if "k_factor" in setting:
            faiss.downcast_index(index).k_factor = float(setting["k_factor"])
        res = timed(lambda q: index.search(q, 10)[1], queries, single)
        points.append(point(f"nprobe={setting['nprobe']},k_factor={setting.get('k_factor', 1)}", res, truth))
        _log(f"{where}: {points[-1]}")
    return points


# ---------------------------------------------------------------- the whole benchmark

def run(settings, *, out: Path, quick: bool = False, sizes: list[int] | None = None,
        work: Path | None = None) -> Outcome:
    """All suites (a smaller set with `quick`), or with `sizes` only the disk-backed one at those sizes,
    keeping the report's other suites; `work` (default test-artifacts/ann) holds its files."""
    import faiss

    if settings.threads:
        faiss.omp_set_num_threads(settings.threads)
    t0 = time.perf_counter()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "faiss": faiss.__version__,
            "numpy": np.__version__, "quick": quick, "load_start": round(os.getloadavg()[0], 2),
            "identities": IDENTITIES}
    if sizes:
        return _disk_sizes(out, quick, sizes, Path(work or "test-artifacts/ann"), meta)
    runs: list[Run] = []

    def save() -> None:  # after every suite, so a long run that is stopped still leaves a report
        meta["wall_s"] = time.perf_counter() - t0
        meta["conclusions"] = conclusions(runs)
        write_report(runs, out, meta)

    if quick:
        runs += in_memory_suite("face-20k x 512 (quick)", 20_000, 512, IDENTITIES, 200,
                                ["hnsw", "ivf-sq8", "ivf-pq"], [1024])
        runs += streaming_suite("face-streamed x 512 (quick)", 40_000, 512, IDENTITIES, 100,
                                "IVF64_HNSW32,PQ32x8,Refine(SQ8)", [20_000], 600,  # no OPQ/PQ128: minutes to train
                                [{"nprobe": 8, "k_factor": 8}])
    else:
        runs += in_memory_suite("face-100k x 512", 100_000, 512, IDENTITIES, 1000,
                                ["hnsw", "ivf-flat", "ivf-sq8", "ivf-pq", "opq-ivf-pq"], [512, 2048])
        save()
        # HNSW only: IVF-SQ8 at 1M needs k-means with 4096 centroids (minutes here) and is measured at 100k.
        runs += in_memory_suite("text-1M x 384 (target)", 1_000_000, 384, IDENTITIES, 1000, ["hnsw"], [])
        save()
        budget = float(os.environ.get("RAG_ANN_BUDGET_MIN", "15")) * 60
        # 512-d at 10M: OPQ-rotated 32-byte PQ codes find candidates, 128-byte PQ codes re-rank them:
        # 168 B/vector with ids, 1.6 GB for 10M. IVF2048 (below the guideline's 4*sqrt(N)) keeps k-means
        # training to minutes on 2 cores; the HNSW coarse quantizer makes assigning 10M vectors cheap.
        runs += streaming_suite("face-10M x 512 (streamed, <= 2 GB)", 10_000_000, 512, IDENTITIES, 500,
                                "OPQ32_512,IVF2048_HNSW32,PQ32x8,Refine(PQ128x8)", [1_000_000, 2_000_000, 5_000_000],
                                budget, [{"nprobe": p, "k_factor": kf} for p, kf in ((16, 8), (32, 16), (64, 32))])
    save()
    return Outcome({"meta": meta, "runs": [r.to_dict() for r in runs]},
                   ["\n".join(meta["conclusions"]), f"wrote {out}/{'ann_quick' if quick else 'ann'}.md, .json, _recall_qps.png"])


def _disk_sizes(out: Path, quick: bool, sizes: list[int], work: Path, meta: dict) -> Outcome:
    """The disk-backed suite at each size; its runs replace the same datasets' in the earlier report."""
    from .ann_disk import disk_suite

    stem = "ann_quick" if quick else "ann"
    old = earlier(out / f"{stem}.json")
    old_meta = old.get("meta", {})
    meta["wall_s"] = old_meta.get("wall_s", 0)
    meta["earlier_suites"] = {k: old_meta.get(k) for k in ("date", "load_start", "wall_s") if k in old_meta}
    new = [disk_suite(work, n, nq=200 if quick else 500) for n in sizes]
    runs = [Run(**r) for r in old.get("runs", []) if not any(r["dataset"] == x.dataset for x in new)] + new
    meta["conclusions"] = conclusions(runs)
    write_report(runs, out, meta)
    return Outcome({"meta": meta, "runs": [r.to_dict() for r in runs]}, ["\n".join(meta["conclusions"])])
