"""Which vector index for how many vectors, and its parameters: the rules both stores use
(rag.vectors for FAISS, rag.milvus_store for Milvus).

The rules follow the FAISS wiki, "Guidelines to choose an index"
(github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index):
  * exact results, or few vectors: `Flat` (brute force is a few ms below ~100k vectors);
  * memory not a concern: `HNSWM` (M between 4 and 64; we use 32);
  * up to ~1M (and memory "somewhat" a concern): `IVFK,...` with K between 4*sqrt(N) and 16*sqrt(N),
    trained on 30*K..256*K vectors; `SQ8` codes cost d bytes/vector and keep cosines within ~1%;
  * memory "very important" (10M+): `OPQM_D,...,PQM` codes, here re-ranked by a finer code (Refine).
The wiki suggests IVF65536_HNSW32 from 1M vectors up; training 65536 centroids takes hours on the
2-core CPUs this runs on, so K stays at 4*sqrt(N) rounded to a power of two and capped at 16384.
`rag bench ann` (eval/results/ann.md) measures every kind on synthetic face-like vectors.
"""

from __future__ import annotations

import math

import numpy as np

CHOICES = ("auto", "flat", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq", "opq-ivf-pq")
FLAT_MAX = 100_000  # below this, exact search costs a few ms per query: no reason to approximate
HNSW_MAX = 1_000_000  # above this the graph (~300 B/vector of links + raw vectors) and its build get heavy
IVF_SQ8_MAX = 10_000_000  # above this even d bytes/vector is too much for one machine: PQ codes
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
DEFAULT_K_FACTOR = 8  # refine: re-rank k * k_factor candidates


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def ann_params(kind: str, n: int, dim: int, **overrides) -> dict:
    """Build-time parameters for `kind` at `n` vectors (sized by the FAISS guidelines above)."""
    p: dict = {"kind": kind, "metric": "inner_product"}
    if kind == "hnsw":
        p.update(M=32, ef_construction=40, ef_search=DEFAULT_EF_SEARCH)
    elif kind in ("ivf-flat", "ivf-sq8", "ivf-pq", "opq-ivf-pq"):
        # K ~ 4*sqrt(N), with >= 39 training points per centroid (k-means needs them) on tiny sets.
        nlist = min(_pow2(4 * math.sqrt(max(n, 1))), 16384, max(1, n // 39))
        p.update(nlist=max(1, nlist), nprobe=min(DEFAULT_NPROBE, max(1, nlist)))
        if kind in ("ivf-pq", "opq-ivf-pq"):
            m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m >= 1 and dim % m == 0)
            # 256 centroids per sub-quantizer need >= 256 training vectors; fewer bits on tiny sets.
            nbits = max(1, min(8, int(math.log2(max(n, 2)))))
            p.update(m=m, nbits=nbits, refine="flat", k_factor=DEFAULT_K_FACTOR)
            if kind == "opq-ivf-pq":
                p["opq"] = nbits == 8  # OPQ trains its own 8-bit PQ: needs >= 256 vectors
    else:
        raise ValueError(f"unknown vector index kind {kind!r}")
    # Only knobs this kind has (a global --nprobe must not leak into an HNSW manifest).
    p.update({k: v for k, v in overrides.items() if v is not None and (k in p or k == "hnsw_quantizer")})
    return p


def training_sample(vectors: np.ndarray, p: dict, seed: int = 0) -> np.ndarray:
    """A random subset for the quantizers: 40 per IVF centroid (FAISS asks 30..256), 64 per PQ centroid."""
    need = max(40 * int(p.get("nlist", 1)), 64 * (1 << int(p.get("nbits", 0))) if "m" in p else 0, 10_000)
    if len(vectors) <= need:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), need, replace=False))
    return vectors[rows]


def choose_kind(n: int, dim: int = 0) -> str:
    """`auto`: the index kind for n vectors (thresholds above, from the FAISS guidelines)."""
    if n < FLAT_MAX:
        return "flat"
    if n < HNSW_MAX:
        return "hnsw"
    if n < IVF_SQ8_MAX:
        return "ivf-sq8"
    return "opq-ivf-pq"

