"""Embedders: the `Embedder` protocol and its sentence-transformers backend.

No Chinese sentence-embedding model installs from PyPI, so the default embedder is *built*
locally: a sentence-transformers `StaticEmbedding` made from the Qwen2.5 0.5B GGUF's tokenizer
and token-embedding matrix (PCA-reduced, frequency-weighted; see `build_static_embedder`).
It takes ~20 s once, is cached, and embeds thousands of chunks per second on a laptop CPU.
Any sentence-transformers folder or Hugging Face id (e.g. BAAI/bge-small-zh-v1.5) works by config.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .atomic import rename_durably
from .errors import ModelNotInstalled
from .weights import gguf_path, st_folder

STATIC_PREFIX = "packaged:"
STATIC_BUILDS = {
    # name -> (source GGUF, output dims)
    "qwen2.5-0.5b-static": ("qwen2.5-coder-0.5b-instruct", 512),
}
STATIC_BUILD_VERSION = 2


@runtime_checkable
class Embedder(Protocol):
    model_id: str
    dim: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """Any sentence-transformers model; vectors are L2-normalised so inner product = cosine."""

    def __init__(self, path_or_id: str, model_id: str | None = None, query_prompt: str = "", batch_size: int = 32):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id or path_or_id
        self.query_prompt = query_prompt
        self.batch_size = batch_size
        local = Path(path_or_id).exists()
        try:
            self.model = SentenceTransformer(path_or_id, device="cpu", local_files_only=local or _offline())
        except OSError as e:
            raise ModelNotInstalled(f"embedding model '{path_or_id}' could not be loaded offline ({e.__class__.__name__}); "
                                    "give a local folder or pre-download it") from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([self.query_prompt + text])[0]


class StaticEmbedder:
    """NumPy inference for a saved sentence-transformers `StaticEmbedding` folder.

    Same arithmetic as sentence-transformers (mean of token vectors, then L2 norm) without importing
    torch, which alone takes ~5 s here: `rag search` answers in well under a second.
    """

    def __init__(self, folder: Path, model_id: str | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.model_id = model_id or str(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.weights = load_file(str(folder / "model.safetensors"))["embedding.weight"]
        self.dim = int(self.weights.shape[1])
        # Same spec, different build (e.g. after a version bump) must not silently mix vectors.
        build = folder / "rag_build.json"
        stamp = build.read_bytes() if build.exists() else str(self.weights.shape).encode()
        self.fingerprint = hashlib.sha256(stamp).hexdigest()[:16]

    @staticmethod
    def usable(folder: Path) -> bool:
        try:
            modules = json.loads((Path(folder) / "modules.json").read_text())
        except (OSError, ValueError):
            return False
        return len(modules) == 1 and modules[0]["type"].endswith("StaticEmbedding") and (Path(folder) / "tokenizer.json").exists()

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, enc in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            if enc.ids:
                out[i] = self.weights[enc.ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0")


def load_gguf_tokenizer(gguf_file: Path):
    """The model's own tokenizer, read from GGUF metadata (no hub)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)


def _token_embeddings(gguf_file: Path) -> np.ndarray:
    import gguf

    reader = gguf.GGUFReader(str(gguf_file))
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    raise ModelNotInstalled(f"{gguf_file}: no token_embd.weight tensor")


def build_static_embedder(gguf_file: Path, out_dir: Path, dims: int = 256) -> Path:
    """Turn an LLM's input embeddings into a static sentence embedder (model2vec-style).

    PCA removes the shared direction that makes raw LLM token vectors all look alike and keeps the
    top `dims` components; rows are then scaled by log(rank) so frequent BPE tokens (low ids are
    frequent merges) weigh less in the mean, like a smooth IDF.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    tok = load_gguf_tokenizer(gguf_file)
    emb = _token_embeddings(gguf_file)
    n_vocab = len(tok)
    emb = emb[: max(n_vocab, 1)] if emb.shape[0] >= n_vocab else emb
    mean = emb.mean(axis=0, keepdims=True)
    centered = emb - mean
    # Fit PCA on a subsample: the full 150k x 896 SVD is slow and gains nothing.
    rng = np.random.default_rng(0)
    sample = centered[rng.choice(len(centered), size=min(40000, len(centered)), replace=False)]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    reduced = centered @ vt[:dims].T
    weights = np.log(np.arange(reduced.shape[0]) + 2.0)[:, None]
    reduced = (reduced * weights / weights.mean()).astype(np.float32)
    static = StaticEmbedding(tok.backend_tokenizer, embedding_weights=reduced)
    model = SentenceTransformer(modules=[static], device="cpu")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model.save(str(tmp))
    (tmp / "rag_build.json").write_text(json.dumps({"source": gguf_file.name, "dims": dims, "version": STATIC_BUILD_VERSION}))
    import shutil

    # Two processes may build at once (the UI and a CLI, parallel tests): the first complete build wins,
    # and nobody deletes a directory another process may already be reading.
    if (out_dir / "rag_build.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return out_dir
    if out_dir.exists():  # a leftover without its build stamp
        shutil.rmtree(out_dir, ignore_errors=True)
    try:
        rename_durably(tmp, out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / "rag_build.json").exists():
            raise
    return out_dir


def static_embedder_dir(name: str, cache_dir: Path, progress=None) -> Path:
    source, dims = STATIC_BUILDS[name]
    out = Path(cache_dir) / "embedders" / f"{name}-v{STATIC_BUILD_VERSION}"
    if (out / "rag_build.json").exists():
        return out
    return build_static_embedder(gguf_path(source, cache_dir, progress=progress), out, dims=dims)


def load_embedder(spec: str, cache_dir: Path, progress=None) -> Embedder:
    """'packaged:<name>' (built or shipped locally), a local folder, a Hugging Face id, or 'fake' (rag.fakes)."""
    from . import fakes

    if fakes.is_fake(spec):
        return fakes.fake_embedder(spec)
    if spec.startswith(STATIC_PREFIX):
        name = spec[len(STATIC_PREFIX):]
        if name in STATIC_BUILDS:
            return StaticEmbedder(static_embedder_dir(name, cache_dir, progress), model_id=spec)
        return SentenceTransformerEmbedder(str(st_folder(name)), model_id=spec)
    if StaticEmbedder.usable(Path(spec)):
        return StaticEmbedder(Path(spec))
    if spec.startswith(("/", "./", "../", "~")) and not Path(spec).expanduser().exists():
        # Clearly a path, and missing: say so now, before a torch import and a hub lookup.
        raise ModelNotInstalled(f"embedding model '{spec}': no such folder ({Path(spec).expanduser().resolve()})")
    query_prompt = "为这个句子生成表示以用于检索相关文章：" if "bge" in spec.lower() and "zh" in spec.lower() else ""
    return SentenceTransformerEmbedder(spec, query_prompt=query_prompt)
