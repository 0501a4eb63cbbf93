"""Generators: the `Generator` protocol, and `load_generator`, which turns a spec string into one.

Backends, one module each:
- `llama_cpp.LlamaCppGenerator` runs GGUF files with llama.cpp (the default for .gguf), on top of
  `kv_cache.KVCache` (prompt prefix reuse, snapshots, logits rows);
- `transformers_backend.TransformersGenerator` runs Hugging Face models (a GGUF file is dequantized once);
- "fake" specs pick the test fakes in rag.fakes.
`decoding` holds the model-free parts (greedy/speculative decoding, drafting, log-probabilities).
Both real backends decode greedily, stream text, and score continuations (log-likelihood), which the
MCQ eval needs. Each records the timings of its last call in `.stats` (`rag bench` reads them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

from ..errors import ModelNotInstalled
from ..weights import PACKAGED, gguf_path


@runtime_checkable
class Generator(Protocol):
    model_id: str
    backend: str

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "",
               passages: Sequence = ()) -> Iterator[str]:
        """Greedy continuation of the chat after the assistant turn has been opened with `prefix`.
        `passages` (rag.generators.linking.Passage) are offered only to a generator whose `links_passages`
        is true: their text in the prompt may be linked from per-chunk KV caches instead of read."""

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str],
              passages: Sequence = ()) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation after the assistant `prefix`."""
        ...


def resolve_model(spec: str, cache_dir: Path, progress=None) -> Path | str:
    """'packaged:<name>' -> assembled GGUF path; a local path stays a path; anything else is a hub id."""
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        if name not in PACKAGED or PACKAGED[name].kind != "gguf":
            raise ModelNotInstalled(f"unknown packaged generator '{name}' "
                                    f"(known: {', '.join(n for n, m in PACKAGED.items() if m.kind == 'gguf')})")
        return gguf_path(name, cache_dir, progress=progress)
    p = Path(spec).expanduser()
    if p.exists():
        return p
    if spec.endswith(".gguf"):
        raise ModelNotInstalled(f"model file not found: {spec}")
    return spec


def load_generator(spec: str, cache_dir: Path, backend: str = "auto", threads: int = 0, progress=None,
                   **options) -> Generator:
    """`options` go to the backend's constructor (e.g. speculative= for llama.cpp); 'fake' picks rag.fakes."""
    from .. import fakes

    if fakes.is_fake(spec):
        return fakes.fake_generator(spec)
    target = resolve_model(spec, cache_dir, progress)
    is_gguf = isinstance(target, Path) and target.suffix == ".gguf"
    if backend == "auto":
        backend = "llama.cpp" if is_gguf and _has_llama_cpp() else "transformers"
    if backend == "llama.cpp":
        if not is_gguf:
            raise ModelNotInstalled(f"llama.cpp needs a .gguf file, got '{spec}'")
        from .llama_cpp import LlamaCppGenerator

        return LlamaCppGenerator(target, model_id=spec, threads=threads, **options)
    if backend == "transformers":
        from .transformers_backend import TransformersGenerator

        return TransformersGenerator(target, model_id=spec, cache_dir=cache_dir, threads=threads)
    raise ValueError(f"unknown backend '{backend}' (auto, llama.cpp, transformers)")


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None
