"""A generation's FAISS vectors as immutable segments in the shared store directory, so that adding
a file writes only that file's vectors instead of a new index of every chunk.

    base    the index rag.index_sizing picks for the collection (flat, HNSW, IVF-SQ8, ...), built over
            every vector at a full build or a compaction
    delta   an exact flat index of the vectors one incremental build added

Each segment is two files written once (temp + fsync + rename): `<name>.faiss` and `<name>.ids.npy`
(position -> docid). A generation lists its segments in its manifest; a docid it does not show (a
chunk removed since the segment was written: a tombstone) is dropped at query time, so HNSW, which
cannot remove vectors, needs no removal at all. Scores are cosines in every segment (exact in flat
deltas), so the parts merge by score; with a flat base the result is exactly a rebuild's.

Compaction builds a new base from the stored vectors (never re-embedding) when the deltas or the
tombstones pass a share of the collection (delta search is exact, so it costs ~1 ms per 10k rows per
query), when the deltas are too many files, or when `auto` would pick another kind for the new size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import fsync_path
from .errors import IndexCorrupt
from .index_sizing import choose_kind

DELTA_SHARE = 0.05  # compact when the deltas hold more than this share of the rows ...
TOMBSTONE_SHARE = 0.10  # ... or the segments this share of rows no generation shows any more
COMPACT_MIN_ROWS = 2_000  # below this many stale rows, never (tiny collections would compact every time)
MAX_DELTAS = 16  # more delta files than this are merged into one (load opens every file)


def _files(name: str) -> tuple[str, str]:
    return f"{name}.faiss", f"{name}.ids.npy"


def write_segment(store_dir: Path, name: str, index, ids: np.ndarray, role: str) -> dict:
    """Save `index` (a rag.vectors index whose position i holds docid ids[i]) as segment `name`."""
    faiss_name, ids_name = _files(name)
    def save_ids(p: Path) -> None:
        with open(p, "wb") as f:  # (np.save on a path would append .npy to the temporary name)
            np.save(f, np.asarray(ids, dtype=np.int64), allow_pickle=False)

    for final, write in ((faiss_name, index.save), (ids_name, save_ids)):
        tmp = store_dir / (final + ".tmp")
        try:
            write(tmp)
            fsync_path(tmp)
            os.rename(tmp, store_dir / final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a renamed file no generation names goes at the next cleanup)
            raise
    fsync_path(store_dir)
    return {"name": name, "role": role, "n": int(len(ids)), "params": index.params()}


def segment_files(entry: dict) -> tuple[str, str]:
    return _files(entry["name"])


def needs_compaction(segments: list[dict], request: dict, live: int, added: int, dim: int) -> bool:
    """Whether the next generation (`live` rows, `added` of them new) should get a new base."""
    base = next((s for s in segments if s["role"] == "base"), None)
    if base is None:
        return True
    if request.get("index", "auto") == "auto" and choose_kind(live, dim) != _kind(base["params"]):
        return True
    deltas = sum(s["n"] for s in segments if s["role"] == "delta") + added
    tomb = sum(s["n"] for s in segments) + added - live
    return (deltas > max(COMPACT_MIN_ROWS, DELTA_SHARE * live)
            or tomb > max(COMPACT_MIN_ROWS, TOMBSTONE_SHARE * live))


def _kind(params: dict) -> str:
    from .vectors import FLAT_KIND

    return "flat" if params["kind"] == FLAT_KIND else params["kind"]


def load_segment(store_dir: Path, entry: dict):
    from .vectors import load_vector_index

    faiss_name, ids_name = _files(entry["name"])
    try:
        index = load_vector_index(entry["params"], store_dir / faiss_name)
        ids = np.load(store_dir / ids_name, allow_pickle=False)
    except (OSError, RuntimeError, ValueError) as e:
        raise IndexCorrupt(f"vector segment {store_dir / faiss_name} cannot be read ({e}); "
                           "run `rag index --rebuild`") from None
    if index.ntotal != len(ids) or len(ids) != entry["n"]:
        raise IndexCorrupt(f"vector segment {store_dir / faiss_name} holds {index.ntotal} vectors, "
                           f"{len(ids)} ids, the manifest says {entry['n']}; run `rag index --rebuild`")
    return index, ids


def delta_vectors(store_dir: Path, segments: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The vectors and docids of every delta segment, concatenated."""
    vecs, ids = [], []
    for s in segments:
        if s["role"] == "delta":
            index, i = load_segment(store_dir, s)
            vecs.append(index.index.reconstruct_n(0, index.ntotal))
            ids.append(i)
    if not vecs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(vecs), np.concatenate(ids)


class SegmentedVectors:
    """The vector index of one generation: its segments searched together, ids mapped to its rows."""

    def __init__(self, base, base_ids: np.ndarray, delta, delta_ids: np.ndarray, docids: np.ndarray, params: dict):
        self.base, self.delta = base, delta
        self._parts = [(p, ids) for p, ids in ((base, base_ids), (delta, delta_ids)) if p is not None and len(ids)]
        self.kind = base.kind
        self.dim = base.dim
        self._params = params
        docids = np.asarray(docids, dtype=np.int64)
        self._order = np.argsort(docids, kind="stable")
        self._sorted = docids[self._order]
        self._n = len(docids)

    @classmethod
    def load(cls, store_dir: Path, vp: dict, docids: np.ndarray, **search) -> "SegmentedVectors":
        from .vectors import FaissFlatIndex

        segs = vp["segments"]
        base_entry = next((s for s in segs if s["role"] == "base"), None)
        if base_entry is None:
            raise IndexCorrupt(f"{store_dir}: the generation names no base vector segment; run `rag index --rebuild`")
        base, base_ids = load_segment(store_dir, base_entry)
        if hasattr(base, "set_search_params"):
            base.set_search_params(**{k: v for k, v in search.items() if k in ("nprobe", "ef_search", "k_factor")})
        vecs, delta_ids = delta_vectors(store_dir, segs)
        delta = None
        if len(delta_ids):
            delta = FaissFlatIndex(base.dim)
            delta.add(vecs)
        params = dict(base.params(), segments=segs)
        if not np.isin(docids, np.concatenate([base_ids, delta_ids]), assume_unique=True).all():
            raise IndexCorrupt(f"{store_dir}: the vector segments lack vectors the generation shows; "
                               "run `rag index --rebuild`")
        return cls(base, base_ids, delta, delta_ids, docids, params)

    @property
    def ntotal(self) -> int:
        return self._n

    def params(self) -> dict:
        return dict(self.base.params(), segments=self._params["segments"])

    def set_search_params(self, **kw) -> None:
        if hasattr(self.base, "set_search_params"):
            self.base.set_search_params(**kw)

    def rows_of(self, docids: np.ndarray) -> np.ndarray:
        """This generation's row of each docid, -1 for docids it does not show (and for -1)."""
        d = np.asarray(docids, dtype=np.int64)
        if not self._n:
            return np.full(d.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, d), self._n - 1)
        return np.where((self._sorted[pos] == d) & (d >= 0), self._order[pos], -1)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k (cosine, row) per query over every segment, tombstones dropped; rows -1 pad short lists.
        Tombstones are a bounded share (compaction), so one over-fetch of k + 16 almost always suffices."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self._n)
        scores = np.zeros((len(q), max(k, 0)), np.float32)
        rows = np.full((len(q), max(k, 0)), -1, np.int64)
        if k <= 0:
            return scores, rows
        fetch = k + 16
        while True:
            got_s, got_r, truncated = [], [], False
            for part, ids in self._parts:
                kk = min(fetch, part.ntotal)
                s, pos = part.search(q, kk)
                truncated |= kk < part.ntotal
                docid = np.where(pos >= 0, ids[np.clip(pos, 0, len(ids) - 1)], -1)
                got_s.append(s)
                got_r.append(self.rows_of(docid))
            s = np.concatenate(got_s, axis=1)
            r = np.concatenate(got_r, axis=1)
            s = np.where(r >= 0, s, -np.inf)
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            top_s = np.take_along_axis(s, order, axis=1)
            top_r = np.take_along_axis(r, order, axis=1)
            if not truncated or np.isfinite(top_s).all():
                ok = np.isfinite(top_s)
                scores[:, :top_s.shape[1]] = np.where(ok, top_s, 0.0)
                rows[:, :top_r.shape[1]] = np.where(ok, top_r, -1)
                return scores, rows
            fetch *= 4
