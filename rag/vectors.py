"""Vector index interface and the FAISS backend (exact inner product: right for small corpora)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    kind: str
    dim: int

    @property
    def ntotal(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: Path) -> None: ...

    def params(self) -> dict: ...


class FaissFlatIndex:
    """Exact search (IndexFlatIP over L2-normalised vectors = cosine)."""

    kind = "faiss-flat-ip"

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
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self.index.search(q, k)

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


def build_vector_index(kind: str, dim: int, vectors: np.ndarray) -> VectorIndex:
    if kind != FaissFlatIndex.kind:
        raise ValueError(f"unknown vector index kind {kind!r}")
    index = FaissFlatIndex(dim)
    index.add(vectors)
    return index


def load_vector_index(kind: str, path: Path) -> VectorIndex:
    if kind != FaissFlatIndex.kind:
        raise ValueError(f"unknown vector index kind {kind!r}")
    return FaissFlatIndex.load(path)
