"""Milvus backend for the VectorIndex interface: Milvus Lite on one machine, a server/cluster by URI.

How it fits the generations of rag.generations: the vector artifact of a generation is one Milvus collection
named after the generation (`rag_<generation>`); the generation directory holds a small pointer file
(`vectors.milvus.json`: uri, collection, index type, counts) that is checksummed like every local
artifact. The collection holds row numbers, vectors and both keyword legs: the chunk's jieba words
and its character bigrams (our analyzers' tokens, space-joined), each turned into a sparse vector by
a Milvus BM25 function (full-text search, Milvus >= 2.5) and searched with metric BM25. Milvus only
splits on whitespace (Lite: on non-word characters), so tokens, stopwords and the glossary are the local legs' own.
The application keeps: chunk texts and the manifest, query analysis and glossary expansion
(expansion terms count half: base terms are sent twice), the document frequencies behind the
coverage gate (TEXT_MATCH counts), and the weighted RRF fusion of the three legs.
  * Default URI: a Milvus Lite database inside the generation directory (`<gen>/milvus.db`). Milvus
    Lite holds an exclusive lock on its database while open, so one database per generation lets
    `rag index` write a new generation while `rag ask` / the UI keep reading the previous one.
  * `--milvus-uri http://host:19530` (or https, with RAG_MILVUS_TOKEN): the same code against a server
    or cluster. Old generations' collections are dropped when rag.generations deletes the generation.
The token is read from the environment and never written to the manifest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import IndexCorrupt, RagError
from .index_sizing import ann_params, choose_kind

ARTIFACT = "vectors.milvus.json"
LITE_DB = "milvus.db"
INSERT_BATCH = 2000  # rows per insert: ~4 MB of 512-d float32, far below gRPC's 64 MB message limit
KEYWORD_FIELDS = ("jieba", "bigram")  # VARCHAR fields of our tokens; "<field>_bm25" holds the BM25 sparse vector
MAX_TOKENS_BYTES = 60_000  # VARCHAR max_length is 65,535 bytes
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
                 uri_in_manifest: str | None = None, keywords: bool = False):
        self.dim = dim
        self.keywords = keywords
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
        if self.keywords:
            from pymilvus import Function, FunctionType

            # Lite has only the standard (regex word) and jieba tokenizers; servers split on whitespace.
            analyzer = {"tokenizer": "standard" if is_lite(self.uri) else "whitespace"}
            for f in KEYWORD_FIELDS:
                schema.add_field(f, DataType.VARCHAR, max_length=65535, enable_analyzer=True,
                                 analyzer_params=analyzer, enable_match=(f == "jieba"))
                schema.add_field(f + "_bm25", DataType.SPARSE_FLOAT_VECTOR)
                schema.add_function(Function(name=f + "_bm25_fn", function_type=FunctionType.BM25,
                                             input_field_names=[f], output_field_names=[f + "_bm25"]))
        c.create_collection(self.collection, schema=schema, consistency_level="Strong")

    def add(self, vectors: np.ndarray, texts=None) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.keywords and (texts is None or len(texts) != len(vectors)):
            raise RagError("a Milvus collection with keyword fields needs the chunk texts")
        for start in range(0, len(vectors), INSERT_BATCH):
            block = vectors[start:start + INSERT_BATCH]
            rows = [{"row": self._ntotal + i, "vector": v.tolist()} for i, v in enumerate(block)]
            if self.keywords:
                from .keyword_index import terms

                for row, text in zip(rows, texts[start:start + INSERT_BATCH]):
                    for f in KEYWORD_FIELDS:
                        row[f] = " ".join(terms(text, f)).encode()[:MAX_TOKENS_BYTES].decode(errors="ignore")
            self.client.insert(self.collection, rows)
            self._ntotal += len(block)

    def finish(self) -> None:
        """Flush, build the index over everything inserted (IVF trains on it), load for search."""
        c = self.client
        c.flush(self.collection)
        ip = c.prepare_index_params()
        ip.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=self.build_params)
        if self.keywords:
            from .lexical import B, K1

            for f in KEYWORD_FIELDS:
                ip.add_index(field_name=f + "_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                             params={"bm25_k1": K1, "bm25_b": B})
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
                "search": self.search_params, "ntotal": self._ntotal, "artifact": ARTIFACT, "keywords": self.keywords}

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

    # -- the keyword legs (rag.keyword_index.KeywordLeg's backend protocol)
    def bm25(self, field: str, weights: dict[str, float], k: int, with_terms: bool = False) -> list[tuple]:
        """BM25 top k over `field`'s tokens; a term's weight is its count in the query, so base terms
        (weight 1) are sent twice and glossary expansions (0.5) once, and the score halved."""
        text = " ".join(t for t, w in weights.items() for _ in range(2 if w >= 1 else 1))
        try:
            res = self.client.search(self.collection, data=[text], anns_field=field + "_bm25", limit=min(k, max(self._ntotal, 1)),
                                     search_params={"metric_type": "BM25"},
                                     output_fields=["jieba"] if with_terms else ["row"])
        except Exception as e:
            raise RagError(f"Milvus full-text search failed ({self.uri}, {self.collection}): {e}") from None
        out = []
        for h in res[0]:
            row = int(h["row"] if "row" in h else h["id"])
            terms = set((h.get("entity") or {}).get("jieba", "").split()) if with_terms else None
            out.append((row, abs(float(h["distance"])) / 2, terms))  # Lite reports -score
        return out

    def doc_freq(self, term: str) -> int:
        if "'" in term or "\\" in term:
            return 0
        try:
            res = self.client.query(self.collection, filter=f"TEXT_MATCH(jieba, '{term}')", output_fields=["count(*)"])
        except Exception as e:
            raise RagError(f"Milvus text match failed ({self.uri}, {self.collection}): {e}") from None
        return int(res[0]["count(*)"]) if res else 0

    def total(self) -> int:
        return self._ntotal

    def __len__(self) -> int:
        return self._ntotal

    def drop(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)


def resolve_uri(uri: str, gen_dir: Path) -> str:
    """Relative Milvus Lite paths in a manifest are relative to the generation directory."""
    return uri if not is_lite(uri) or os.path.isabs(uri) else str(Path(gen_dir) / uri)


def build_milvus_index(kind: str, dim: int, vectors: np.ndarray, gen_dir: Path, generation: str,
                       uri: str | None = None, token: str | None = None, texts=None, **search) -> MilvusIndex:
    """Create the generation's collection, insert `vectors` (row i = chunk i), index and load it.

    With no `uri`, a Milvus Lite database is created in `gen_dir`; the caller renames that directory
    afterwards, so the in-process Lite server is released here and the manifest stores the relative path.
    """
    p = milvus_params(kind, len(vectors), dim, **search)
    lite_default = not uri
    real_uri = str(Path(gen_dir) / LITE_DB) if lite_default else resolve_uri(uri, gen_dir)
    index = MilvusIndex(dim, real_uri, collection_name(generation), p["index_type"], p["build"], p["search"],
                        token, uri_in_manifest=LITE_DB if lite_default else uri, keywords=texts is not None)
    try:
        index.create()
        index.add(vectors, texts)
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
                        p.get("search"), token, uri_in_manifest=p["uri"], keywords=bool(p.get("keywords")))
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
