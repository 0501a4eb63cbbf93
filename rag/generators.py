"""Generators: the `Generator` protocol and two backends.

- `LlamaCppGenerator` runs GGUF files with llama.cpp (the default: ~10x faster than fp32 torch here).
- `TransformersGenerator` runs Hugging Face models; a GGUF file is dequantized once (~70 s) and the
  fp32 weights are cached as safetensors so later starts load in seconds.
Both stream text and score continuations (log-likelihood), which the MCQ eval needs.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

from .errors import GenerationError, ModelNotInstalled
from .weights import PACKAGED, gguf_path


@runtime_checkable
class Generator(Protocol):
    model_id: str
    backend: str

    def stream(self, messages: list[dict], max_tokens: int = 256) -> Iterator[str]: ...

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
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


def load_generator(spec: str, cache_dir: Path, backend: str = "auto", threads: int = 0, progress=None) -> Generator:
    target = resolve_model(spec, cache_dir, progress)
    is_gguf = isinstance(target, Path) and target.suffix == ".gguf"
    if backend == "auto":
        backend = "llama.cpp" if is_gguf and _has_llama_cpp() else "transformers"
    if backend == "llama.cpp":
        if not is_gguf:
            raise ModelNotInstalled(f"llama.cpp needs a .gguf file, got '{spec}'")
        return LlamaCppGenerator(target, model_id=spec, threads=threads)
    if backend == "transformers":
        return TransformersGenerator(target, model_id=spec, cache_dir=cache_dir, threads=threads)
    raise ValueError(f"unknown backend '{backend}' (auto, llama.cpp, transformers)")


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def physical_cores() -> int:
    return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- llama.cpp

class LlamaCppGenerator:
    backend = "llama.cpp"

    def __init__(self, path: Path, model_id: str | None = None, threads: int = 0, n_ctx: int = 4096, n_batch: int = 512):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelNotInstalled("llama-cpp-python is not installed (pip install llama-cpp-python)") from None
        self.model_id = model_id or str(path)
        self.path = Path(path)
        threads = threads or physical_cores()
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                             n_batch=n_batch, verbose=False, logits_all=False)
        except (ValueError, RuntimeError) as e:
            raise ModelNotInstalled(f"cannot load {path}: {e}") from None
        self._lock = threading.Lock()  # one llama context: one request at a time

    def stream(self, messages: list[dict], max_tokens: int = 256) -> Iterator[str]:
        with self._lock:
            try:
                for part in self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                            top_k=1, stream=True):
                    delta = part["choices"][0]["delta"].get("content")
                    if delta:
                        yield delta
            except (RuntimeError, ValueError) as e:
                raise GenerationError(f"generation failed: {e}") from None

    def chat_prompt(self, messages: list[dict], prefix: str = "") -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        fmt = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>", bos_token="",
                                  add_generation_prompt=True)
        return fmt(messages=messages).prompt + prefix

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        import numpy as np

        prompt = self.chat_prompt(messages, prefix)
        with self._lock:
            llm = self.llm
            ptoks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
            llm.reset()
            llm.eval(ptoks)
            base_logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            out = []
            for cont in continuations:
                ctoks = llm.tokenize(cont.encode(), add_bos=False, special=False)
                llm.n_tokens = len(ptoks)  # roll back to the shared prompt (its KV cache is kept)
                logits = base_logits
                total = 0.0
                for i, t in enumerate(ctoks):
                    total += float(logits[t] - _logsumexp(logits))
                    if i + 1 < len(ctoks):
                        llm.eval([t])
                        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
                out.append((total, len(ctoks)))
            return out


def _logsumexp(x) -> float:
    m = float(x.max())
    import numpy as np

    return m + math.log(float(np.exp(x - m).sum()))


# ---------------------------------------------------------------- transformers

class TransformersGenerator:
    backend = "transformers"

    def __init__(self, target: Path | str, model_id: str | None = None, cache_dir: Path | None = None, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model_id or str(target)
        torch.set_num_threads(threads or physical_cores())
        offline = not (isinstance(target, Path) and target.exists())
        try:
            if isinstance(target, Path) and target.suffix == ".gguf":
                folder = dequantized_cache(target, Path(cache_dir or target.parent))
            else:
                folder = target
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        except OSError as e:
            hint = " (no model hub here: give a local folder)" if offline else ""
            raise ModelNotInstalled(f"cannot load '{self.model_id}'{hint}: {str(e).splitlines()[0]}") from None
        self.model.eval()
        self._lock = threading.Lock()

    def _prompt_ids(self, messages: list[dict], prefix: str = ""):
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids

    def stream(self, messages: list[dict], max_tokens: int = 256) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        ids = self._prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        error: list[BaseException] = []

        def run():
            import torch

            try:
                with torch.inference_mode():
                    self.model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=max_tokens,
                                        do_sample=False, streamer=streamer, pad_token_id=self.tokenizer.eos_token_id)
            except BaseException as e:  # surfaced to the caller below
                error.append(e)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            for piece in streamer:
                if piece:
                    yield piece
            worker.join()
        if error:
            raise GenerationError(f"generation failed: {error[0]}")

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        import torch

        ids = self._prompt_ids(messages, prefix)
        out = []
        with self._lock, torch.inference_mode():
            past = self.model(ids, use_cache=True)
            base_logp = torch.log_softmax(past.logits[0, -1].float(), -1)
            for cont in continuations:
                cids = self.tokenizer(cont, return_tensors="pt", add_special_tokens=False).input_ids
                total = float(base_logp[cids[0, 0]])
                if cids.shape[1] > 1:
                    full = torch.cat([ids, cids[:, :-1]], dim=1)
                    logits = self.model(full).logits[0, ids.shape[1]:]
                    logp = torch.log_softmax(logits.float(), -1)
                    total += float(logp.gather(1, cids[0, 1:, None]).sum())
                out.append((total, int(cids.shape[1])))
        return out


def dequantized_cache(gguf_file: Path, cache_dir: Path) -> Path:
    """fp32 safetensors copy of a GGUF model: dequantizing costs ~70 s, loading this costs seconds.

    transformers refuses `save_pretrained` on GGUF-loaded models, so config, tokenizer and state dict
    are written separately (safetensors' `save_model` handles the tied embedding/LM-head weights).
    """
    out = Path(cache_dir) / "dequantized" / gguf_file.stem
    done = out / "rag_dequantized.json"
    if done.exists():
        return out
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        model.config.save_pretrained(str(tmp))
        model.generation_config.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))
        (tmp / "rag_dequantized.json").write_text(json.dumps({"source": gguf_file.name}))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return out
