"""What the ANN benchmarks (rag.bench.ann, rag.bench.ann_disk) share: synthetic face-like vectors, exact
ground truth over a stream, recall, timed search and the record of one measured index.

The vectors are shaped like face embeddings: L2-normalised, clustered around a few thousand identity
centres, with a shared low-rank "pose / lighting" variation and isotropic noise (intra-identity cosine
~0.65, inter-identity ~0.2). Queries are new faces of known identities. They are generated in batches
from per-batch seeds, so a 10M set (20 GB as float32) never has to be held in RAM.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .report import logger

BATCH = 100_000
CENTRE_RANK = 128
CENTRE_SPREAD = 0.1  # isotropic part of the identity centres
POSE_RANK = 32
POSE_VAR = 0.35  # variance of a face around its identity centre in the shared pose/lighting subspace
NOISE_VAR = 0.05  # and isotropic (intra-identity cosine ~0.7, top-1 neighbour ~0.85)
SINGLE_QUERIES = 200  # single-query QPS is timed on this many queries, batched on all of them
TRAIN_PER_CENTROID = 40  # FAISS asks 30..256 points per centroid; the low end, since k-means is the slow part

_log = logger("ann")


class FaceLikeVectors:
    """Deterministic generator: batch b of stream s is always the same vectors.

    Identity centres lie near a rank-CENTRE_RANK subspace (decaying spectrum) plus a little isotropic
    spread: real face embeddings are not uniform on the 512-sphere (their PCA spectrum decays), and with
    full-rank centres and strong isotropic noise every point is nearly equidistant from every other,
    which no ANN index handles (HNSW efSearch=256 reached only 0.91 recall@10 on 20k such vectors).
    """

    def __init__(self, dim: int, identities: int, seed: int = 0):
        self.dim, self.identities, self.seed = dim, identities, seed
        rng = np.random.default_rng([seed, 0])
        rank = min(CENTRE_RANK, dim)
        basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T
        spectrum = 1.0 / np.sqrt(np.arange(1, rank + 1))
        c = (rng.standard_normal((identities, rank)) * np.sqrt(spectrum / spectrum.sum())) @ basis
        c += rng.standard_normal((identities, dim)) * math.sqrt(CENTRE_SPREAD / dim)
        self.centres = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)
        basis = np.linalg.qr(rng.standard_normal((dim, POSE_RANK)))[0].T  # orthonormal rows
        spectrum = 1.0 / np.arange(1, POSE_RANK + 1)  # a few dominant directions (pose, light)
        spectrum *= POSE_VAR / spectrum.sum()
        self.pose = (basis * np.sqrt(spectrum)[:, None]).astype(np.float32)

    def batch(self, b: int, size: int = BATCH, stream: int = 1) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, b])
        ids = rng.integers(0, self.identities, size)
        x = self.centres[ids]
        x += rng.standard_normal((size, POSE_RANK), dtype=np.float32) @ self.pose
        x += rng.standard_normal((size, self.dim), dtype=np.float32) * np.float32(math.sqrt(NOISE_VAR / self.dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def database(self, n: int) -> np.ndarray:
        out = np.empty((n, self.dim), np.float32)
        for b, start in enumerate(range(0, n, BATCH)):
            out[start:start + BATCH] = self.batch(b, min(BATCH, n - start))
        return out

    def queries(self, nq: int) -> np.ndarray:
        return self.batch(0, nq, stream=2)  # a separate stream: new photos, not database members


class StreamingTopK:
    """Exact top-k of fixed queries over database batches seen one at a time."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q, self.k = queries, k
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)

    def update(self, batch: np.ndarray, offset: int) -> None:
        s = self.q @ batch.T
        kk = min(self.k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([self.scores, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([self.ids, part + offset], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :self.k]
        self.scores = np.take_along_axis(cand_s, order, 1)
        self.ids = np.take_along_axis(cand_i, order, 1)


class TrainedStream(NamedTuple):
    gen: FaceLikeVectors
    queries: np.ndarray
    gt: StreamingTopK  # the queries' exact top-10, updated as batches arrive
    index: object  # the faiss index, trained, still empty
    train_s: float


def trained_stream(dataset: str, n: int, dim: int, identities: int, nq: int, factory: str) -> TrainedStream:
    """The fixed parts of a streamed benchmark: the generator, held-out queries, and an IVF-family index
    from `factory` trained on the first vectors of a separate stream (never all of them in RAM)."""
    import faiss

    from ..vectors import no_polysemous

    gen = FaceLikeVectors(dim, identities)
    queries = gen.queries(nq)
    t = time.perf_counter()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    no_polysemous(index)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = 10  # as in rag.vectors
    train_n = min(n, TRAIN_PER_CENTROID * ivf.nlist)
    train = np.concatenate([gen.batch(b, BATCH, stream=3) for b in range(math.ceil(train_n / BATCH))])[:train_n]
    index.train(train)
    train_s = time.perf_counter() - t
    _log(f"{dataset}: trained {factory} on {train_n:,} vectors in {train_s:.0f}s")
    return TrainedStream(gen, queries, StreamingTopK(queries, 10), index, train_s)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(np.intersect1d(found[i, :k], truth[i, :k], assume_unique=False)) for i in range(len(truth)))
    return hits / (k * len(truth))


def timed(search_ids, queries: np.ndarray, single: int = SINGLE_QUERIES) -> dict:
    """Batched QPS on all queries, single-query QPS on the first `single`, and the batched result ids.
    `search_ids(queries) -> ids`."""
    import faiss

    search_ids(queries[:8])  # warm-up (page-in, thread pool)
    t = time.perf_counter()
    ids = search_ids(queries)
    batched = len(queries) / (time.perf_counter() - t)
    single = min(single, len(queries))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query = one thread (what a server does per request); OpenMP
    try:                          # fork/join per 1-row query only adds overhead on 2 shared cores
        t = time.perf_counter()
        for i in range(single):
            search_ids(queries[i:i + 1])
        qps1 = single / (time.perf_counter() - t)
    finally:
        faiss.omp_set_num_threads(threads)
    return {"qps_batched": batched, "qps_single": qps1, "ids": ids}


def point(setting: str, res: dict, truth: np.ndarray) -> dict:
    """One search setting's measurements (a row of the report, a point of the recall/QPS plot)."""
    return {"setting": setting, "recall@1": recall(res["ids"], truth, 1), "recall@10": recall(res["ids"], truth, 10),
            "qps_single": res["qps_single"], "qps_batched": res["qps_batched"]}


@dataclass
class Run:
    dataset: str
    n: int
    dim: int
    index: str
    build_s: float
    bytes_per_vector: float
    index_mb: float
    rss_delta_mb: float
    peak_rss_mb: float
    points: list  # one per search setting: {"setting", "recall@1", "recall@10", "qps_single", "qps_batched"}
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)
