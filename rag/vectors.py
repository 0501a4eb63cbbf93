"""Vector indexes behind one interface: exact Flat for small collections, FAISS ANN indexes for large ones.

Which kind for how many vectors, and its parameters, are rag.index_sizing's rules (from the FAISS
guidelines); this module turns them into FAISS indexes and hands store="milvus" to rag.milvus_store.

Deletes: HNSW graphs cannot remove vectors (faiss raises on remove_ids) and IVF lists can. We never
edit an index in place: an index built here is saved once as a segment of the shared store
(rag.vector_segments); later builds add small flat segments and drop removed rows at query time, and
a compaction builds (retrains) a new base from the vectors stored in SQLite; its cost is the build
time in the benchmark report (seconds for 100k vectors, minutes for millions).

Scores are inner products of L2-normalised vectors (cosines): exact for flat/hnsw/ivf-flat and for
refined PQ (exact re-ranking), approximate for SQ8 and un-refined PQ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import RagError
from .index_sizing import CHOICES, ann_params, choose_kind, training_sample

FLAT_KIND = "faiss-flat-ip"  # the name existing generations' manifests carry


class VectorIndex(Protocol):
    kind: str
    dim: int

    @property
    def ntotal(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: Path) -> None: ...

    def params(self) -> dict: ...


def _empty(nq: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)


def _search(index, q: np.ndarray, k: int):
    """A single query runs on one thread. OpenMP's fork/join buys nothing for one row, and on a busy
    machine a descheduled worker stalls the whole search: flat search over 10k chunks took p50 15 ms /
    p95 57 ms with 2 threads under load, 2 ms / 5 ms with one (eval/results/scale.md)."""
    if len(q) != 1:
        return index.search(q, k)
    import faiss

    global _THREADS
    if _THREADS is None:  # captured once: concurrent single queries must not restore each other's 1
        _THREADS = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, k)
    finally:
        faiss.omp_set_num_threads(_THREADS)


_THREADS: int | None = None


class FaissFlatIndex:
    """Exact search (IndexFlatIP over L2-normalised vectors = cosine)."""

    kind = FLAT_KIND
    artifact = "vectors.faiss"

    def __init__(self, dim: int, index=None):
        import faiss

        self.dim = dim
        self.index = index if index is not None else faiss.IndexFlatIP(dim)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.ntotal)
        if k <= 0:
            return _empty(len(q))
        return _search(self.index, q, k)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> "FaissFlatIndex":
        import faiss

        index = faiss.read_index(str(path))
        return cls(index.d, index)

    def params(self) -> dict:
        return {"kind": self.kind, "metric": "inner_product"}



def factory_string(p: dict, dim: int) -> str:
    kind = p["kind"]
    if kind == "hnsw":
        return f"HNSW{p['M']}"
    coarse = f"IVF{p['nlist']}" + ("_HNSW32" if p.get("hnsw_quantizer") else "")
    if kind == "ivf-flat":
        return f"{coarse},Flat"
    if kind == "ivf-sq8":
        return f"{coarse},SQ8"
    codes = f"PQ{p['m']}x{p['nbits']}"
    head = f"OPQ{p['m']}_{dim}," if kind == "opq-ivf-pq" and p.get("opq", True) else ""
    refine = p.get("refine") or ""
    tail = "" if not refine else ",RFlat" if refine == "flat" else f",Refine({refine})"
    return f"{head}{coarse},{codes}{tail}"


def no_polysemous(index) -> None:
    """Switch off polysemous training in every PQ part of `index` (through Refine / PreTransform).

    faiss does it by default for PQ codes; it only serves Hamming pre-filtering, which we never use,
    and it made training 30x slower (IVF64,PQ8 on 20k vectors: 40 s instead of 1 s).
    """
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = 20  # default 50; the rotation's gain flattens out well before (2.5x less training)
    if hasattr(index, "do_polysemous_training"):
        index.do_polysemous_training = False
    for attr in ("index", "base_index", "refine_index"):
        sub = getattr(index, attr, None)
        if sub is not None:
            no_polysemous(sub)


class FaissAnnIndex:
    """A FAISS index made by `index_factory` from `ann_params`; search-time knobs live in params()."""

    artifact = "vectors.faiss"

    def __init__(self, dim: int, p: dict, index=None):
        import faiss

        self.dim = dim
        self.kind = p["kind"]
        self._p = dict(p)
        self._p["factory"] = factory_string(self._p, dim)
        self.index = index if index is not None else faiss.index_factory(
            dim, self._p["factory"], faiss.METRIC_INNER_PRODUCT)
        if self.kind == "hnsw" and index is None:
            faiss.downcast_index(self.index).hnsw.efConstruction = int(self._p["ef_construction"])
        if index is None:
            no_polysemous(self.index)
        if "nlist" in self._p and index is None:
            # 10 k-means iterations place IVF centroids about as well as the default 25, at 40% of the cost
            faiss.extract_index_ivf(self.index).cp.niter = 10
        self.set_search_params(nprobe=p.get("nprobe"), ef_search=p.get("ef_search"), k_factor=p.get("k_factor"))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          k_factor: int | None = None) -> None:
        import faiss

        ps = faiss.ParameterSpace()
        if nprobe and "nlist" in self._p:
            ps.set_index_parameter(self.index, "nprobe", int(nprobe))
            self._p["nprobe"] = int(nprobe)
        if ef_search and self.kind == "hnsw":
            ps.set_index_parameter(self.index, "efSearch", int(ef_search))
            self._p["ef_search"] = int(ef_search)
        if k_factor and self._p.get("refine"):
            faiss.downcast_index(self.index).k_factor = float(k_factor)
            self._p["k_factor"] = int(k_factor)

    def train(self, sample: np.ndarray) -> None:
        if not self.index.is_trained:
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))
            self._p["train_size"] = int(len(sample))

    def add(self, vectors: np.ndarray) -> None:
        if not len(vectors):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_trained:
            self.train(training_sample(vectors, self._p))
        self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.ntotal)
        if k <= 0:
            return _empty(len(q))
        scores, rows = _search(self.index, q, k)
        return scores, rows  # rows are -1 where fewer than k were found (the retriever skips them)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, p: dict) -> "FaissAnnIndex":
        import faiss

        index = faiss.read_index(str(path))
        return cls(index.d, p, index)

    def params(self) -> dict:
        return dict(self._p)



def build_vector_index(kind: str, dim: int, vectors: np.ndarray, store: str = "faiss",
                       gen_dir: Path | None = None, generation: str | None = None,
                       milvus_uri: str | None = None, texts=None, **search) -> VectorIndex:
    """Build `kind` ("auto", a CHOICES name, or the flat index's manifest name) over `vectors`.

    `search` may carry nprobe / ef_search / k_factor overrides; they are recorded in params().
    store="milvus" puts the vectors in a Milvus collection named after `generation` (rag.milvus_store).
    """
    n = len(vectors)
    if store == "milvus":
        from .milvus_store import build_milvus_index

        return build_milvus_index(kind, dim, vectors, gen_dir, generation or "default", milvus_uri, texts=texts, **search)
    if store != "faiss":
        raise RagError(f"unknown vector store {store!r}; choose faiss or milvus")
    if kind == "auto":
        kind = choose_kind(n, dim)
    if kind in ("flat", FLAT_KIND):
        index = FaissFlatIndex(dim)
        index.add(vectors)
        return index
    if kind not in CHOICES:
        raise RagError(f"unknown vector index {kind!r}; choose one of {', '.join(CHOICES)}")
    index = FaissAnnIndex(dim, ann_params(kind, n, dim, **search))
    if n:
        index.add(vectors)
    return index


def load_vector_index(kind_or_params, path: Path, milvus_uri: str | None = None, **search) -> VectorIndex:
    """Load what build_vector_index saved at `path`; `kind_or_params` is the manifest's vector_index
    entry (or just its kind). Non-None `search` values override the saved nprobe / ef_search / k_factor."""
    p = kind_or_params if isinstance(kind_or_params, dict) else {"kind": kind_or_params}
    kind = p["kind"]
    if p.get("store") == "milvus":
        from .milvus_store import load_milvus_index

        return load_milvus_index(p, Path(path).parent, milvus_uri, **search)
    if kind == FLAT_KIND:
        return FaissFlatIndex.load(path)
    if kind not in CHOICES or "factory" not in p:
        raise ValueError(f"unknown vector index kind {kind!r}")
    index = FaissAnnIndex.load(path, p)
    index.set_search_params(**search)
    return index


def drop_vector_index(p: dict, gen_dir: Path) -> None:
    """Release what a deleted generation holds outside its directory (a Milvus server collection)."""
    if p.get("store") == "milvus":
        from .milvus_store import drop_milvus_index

        drop_milvus_index(p, gen_dir)
