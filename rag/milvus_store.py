"""Milvus backend for the VectorIndex interface: Milvus Lite on one machine, a server/cluster by URI.

How it fits the generations of rag.index: the vector artifact of a generation is one Milvus collection
named after the generation (`rag_<generation>`); the generation directory holds a small pointer file
(`vectors.milvus.json`: uri, collection, index type, counts) that is checksummed like every local
artifact. Chunk texts, BM25 and the manifest stay local; the collection holds row numbers and vectors.
  * Default URI: a Milvus Lite database inside the generation directory (`<gen>/milvus.db`). Milvus
    Lite holds an exclusive lock on its database while open, so one database per generation lets
    `rag index` write a new generation while `rag ask` / the UI keep reading the previous one.
  * `--milvus-uri http://host:19530` (or https, with RAG_MILVUS_TOKEN): the same code against a server
    or cluster. Old generations' collections are dropped when rag.index deletes the generation.
The token is read from the environment and never written to the manifest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import IndexCorrupt, RagError

ARTIFACT = "vectors.milvus.json"
LITE_DB = "milvus.db"
INSERT_BATCH = 2000  # rows per insert: ~4 MB of 512-d float32, far below gRPC's 64 MB message limit
# Our index kinds -> Milvus index types. Milvus has no OPQ; IVF_PQ is the nearest (servers only:
# Milvus Lite implements FLAT, HNSW, IVF_FLAT and IVF_SQ8).
MILVUS_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivf-flat": "IVF_FLAT", "ivf-sq8": "IVF_SQ8",
                "ivf-pq": "IVF_PQ", "opq-ivf-pq": "IVF_PQ"}


def collection_name(generation: str) -> str:
    """Milvus names allow letters, digits and underscores, starting with a letter or underscore."""
    return "rag_" + re.sub(r"[^0-9A-Za-z_]", "_", generation)


def is_lite(uri: str) -> bool:
    return uri.endswith(".db") and not re.match(r"^[a-z]+://", uri)


def _client(uri: str, token: str | None = None):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise RagError("the Milvus store needs pymilvus (and milvus-lite for local files): "
                       "pip install 'rag-dl-notes[milvus]'") from None
    try:
        return MilvusClient(uri=uri, token=token or os.environ.get("RAG_MILVUS_TOKEN", ""))
    except Exception as e:  # pymilvus raises its own MilvusException / ConnectionConfigException
        raise RagError(f"cannot connect to Milvus at {uri}: {e}") from None


def release_lite(uri: str) -> None:
    """Stop the in-process Milvus Lite server for `uri`, releasing its lock (before a directory rename)."""
    if is_lite(uri):
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(uri)


def milvus_params(kind: str, n: int, dim: int, **search) -> dict:
    """Milvus index type and parameters for one of rag.vectors' kinds (sized as for FAISS)."""
    from .vectors import ann_params, choose_kind

    if kind == "auto":
        kind = choose_kind(n, dim)
    if kind in ("flat", "faiss-flat-ip"):
        return {"index_type": "FLAT", "build": {}, "search": {}}
    if kind not in MILVUS_TYPES:
        raise RagError(f"unknown vector index {kind!r}")
    p = ann_params(kind, n, dim, **search)
    if kind == "hnsw":
        return {"index_type": "HNSW", "build": {"M": p["M"], "efConstruction": p["ef_construction"]},
                "search": {"ef": p["ef_search"]}}
    build = {"nlist": p["nlist"]}
    if "m" in p:
        build.update(m=p["m"], nbits=p["nbits"])
    return {"index_type": MILVUS_TYPES[kind], "build": build, "search": {"nprobe": p["nprobe"]}}


class MilvusIndex:
    """A Milvus collection with an INT64 primary key `row` (the chunk's position) and a float vector."""

    kind = "milvus"
    artifact = ARTIFACT

    def __init__(self, dim: int, uri: str, collection: str, index_type: str = "FLAT",
                 build: dict | None = None, search: dict | None = None, token: str | None = None,
                 uri_in_manifest: str | None = None):
        self.dim = dim
        self.uri = uri
        self.collection = collection
        self.index_type = index_type
        self.build_params = dict(build or {})
        self.search_params = dict(search or {})
        self.uri_in_manifest = uri_in_manifest or uri
        self.client = _client(uri, token)
        self._ntotal = 0

    # -- creating
    def create(self) -> None:
        from pymilvus import DataType

        c = self.client
        if c.has_collection(self.collection):  # a crashed build of the same generation name
            c.drop_collection(self.collection)
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        c.create_collection(self.collection, schema=schema, consistency_level="Strong")

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for start in range(0, len(vectors), INSERT_BATCH):
            block = vectors[start:start + INSERT_BATCH]
            rows = [{"row": self._ntotal + i, "vector": v.tolist()} for i, v in enumerate(block)]
            self.client.insert(self.collection, rows)
            self._ntotal += len(block)

    def finish(self) -> None:
        """Flush, build the index over everything inserted (IVF trains on it), load for search."""
        c = self.client
        c.flush(self.collection)
        ip = c.prepare_index_params()
        ip.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=self.build_params)
        c.create_index(self.collection, ip)
        c.load_collection(self.collection)

    # -- reading
    @property
    def ntotal(self) -> int:
        return self._ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self._ntotal)
        scores = np.full((len(q), max(k, 0)), -np.inf, np.float32)
        rows = np.full((len(q), max(k, 0)), -1, np.int64)
        if k <= 0:
            return scores, rows
        try:
            res = self.client.search(self.collection, data=q.tolist(), limit=k, anns_field="vector",
                                     search_params={"metric_type": "IP", "params": self.search_params})
        except Exception as e:
            raise RagError(f"Milvus search failed ({self.uri}, {self.collection}): {e}") from None
        for i, hits in enumerate(res):
            for j, h in enumerate(hits[:k]):
                rows[i, j] = int(h["row"] if "row" in h else h["id"])  # pymilvus 3 keys hits by the pk field
                scores[i, j] = float(h["distance"])
        return scores, rows

    # -- the generation's pointer file
    def params(self) -> dict:
        return {"kind": self.kind, "store": "milvus", "uri": self.uri_in_manifest, "collection": self.collection,
                "dim": self.dim,
                "metric": "inner_product", "index_type": self.index_type, "build": self.build_params,
                "search": self.search_params, "ntotal": self._ntotal, "artifact": ARTIFACT}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.params(), ensure_ascii=False, indent=1))

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None, **_) -> None:
        if nprobe and "nprobe" in self.search_params:
            self.search_params["nprobe"] = int(nprobe)
        if ef_search and "ef" in self.search_params:
            self.search_params["ef"] = int(ef_search)

    def close(self, release: bool = False) -> None:
        """Close the connection; `release` also stops this process's Milvus Lite server for the file
        (only for a generation's private database: a shared .db may still be open elsewhere here)."""
        try:
            self.client.close()
        finally:
            if release:
                release_lite(self.uri)

    def drop(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)


def resolve_uri(uri: str, gen_dir: Path) -> str:
    """Relative Milvus Lite paths in a manifest are relative to the generation directory."""
    return uri if not is_lite(uri) or os.path.isabs(uri) else str(Path(gen_dir) / uri)


def build_milvus_index(kind: str, dim: int, vectors: np.ndarray, gen_dir: Path, generation: str,
                       uri: str | None = None, token: str | None = None, **search) -> MilvusIndex:
    """Create the generation's collection, insert `vectors` (row i = chunk i), index and load it.

    With no `uri`, a Milvus Lite database is created in `gen_dir`; the caller renames that directory
    afterwards, so the in-process Lite server is released here and the manifest stores the relative path.
    """
    p = milvus_params(kind, len(vectors), dim, **search)
    lite_default = not uri
    real_uri = str(Path(gen_dir) / LITE_DB) if lite_default else resolve_uri(uri, gen_dir)
    index = MilvusIndex(dim, real_uri, collection_name(generation), p["index_type"], p["build"], p["search"],
                        token, uri_in_manifest=LITE_DB if lite_default else uri)
    try:
        index.create()
        index.add(vectors)
        index.finish()
    except RagError:
        raise
    except Exception as e:
        raise RagError(f"Milvus could not build {index.collection} at {real_uri}: {e}") from None
    finally:
        if lite_default:
            index.close(release=True)
    return index


def load_milvus_index(p: dict, gen_dir: Path, uri: str | None = None, token: str | None = None,
                      **search) -> MilvusIndex:
    """Open the collection a manifest points at (`uri` overrides the recorded one, e.g. a moved server)."""
    real_uri = uri or resolve_uri(p["uri"], gen_dir)
    index = MilvusIndex(int(p.get("dim") or 0), real_uri, p["collection"], p["index_type"], p.get("build"),
                        p.get("search"), token, uri_in_manifest=p["uri"])
    try:
        if not index.client.has_collection(p["collection"]):
            raise IndexCorrupt(f"Milvus collection {p['collection']} is missing at {real_uri}; "
                               "run `rag index --rebuild`")
        index.client.load_collection(p["collection"])
        n = int(index.client.get_collection_stats(p["collection"])["row_count"])
    except RagError:
        raise
    except Exception as e:
        raise RagError(f"cannot open Milvus collection {p['collection']} at {real_uri}: {e}") from None
    if n != int(p["ntotal"]):
        raise IndexCorrupt(f"Milvus collection {p['collection']} has {n} vectors, the manifest says {p['ntotal']}; "
                           "run `rag index --rebuild`")
    index._ntotal = n
    index.set_search_params(**search)
    return index


def drop_milvus_index(p: dict, gen_dir: Path, token: str | None = None) -> None:
    """Drop a deleted generation's collection (server URIs; a Lite database goes with its directory)."""
    if is_lite(p["uri"]) and not os.path.isabs(p["uri"]):
        return
    index = MilvusIndex(0, resolve_uri(p["uri"], gen_dir), p["collection"], token=token)
    try:
        index.drop()
    finally:
        index.close()
