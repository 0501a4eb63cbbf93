"""Generators: the `Generator` protocol and two backends.

- `LlamaCppGenerator` runs GGUF files with llama.cpp (the default for .gguf: ~15x faster than fp32 torch here).
  It drives the llama.cpp context directly instead of `create_chat_completion`, so that it can
  (a) keep the KV cache of the longest common token prefix between calls (system prompt + few-shot
  demo are identical across questions), (b) ask llama.cpp for logits only at the positions it needs
  (`logits_all=True` makes prompt processing ~4x slower), and (c) verify drafted tokens in one batch.
- `TransformersGenerator` runs Hugging Face models; a GGUF file is dequantized once (~70 s) and the
  fp32 weights are cached as safetensors so later starts load in seconds.
Both decode greedily, stream text, and score continuations (log-likelihood), which the MCQ eval needs.
Each records the timings of its last call in `.stats` (`rag bench` reads them).
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

from .cpu import CpuWatch, choose_threads, physical_cores
from .errors import GenerationError, ModelNotInstalled
from .weights import PACKAGED, gguf_path

SPECULATIVE = ("none", "prompt-lookup")
SNAPSHOTS = 4  # prompt KV snapshots kept per llama.cpp model (~25 MB each for a 900-token prompt)
SNAPSHOT_MIN_GAIN = 32  # restoring costs a copy; only worth it when it saves this many tokens


@runtime_checkable
class Generator(Protocol):
    model_id: str
    backend: str

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "") -> Iterator[str]:
        """Greedy continuation of the chat after the assistant turn has been opened with `prefix`."""

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


def load_generator(spec: str, cache_dir: Path, backend: str = "auto", threads: int = 0, progress=None,
                   **options) -> Generator:
    """`options` go to the backend's constructor (e.g. speculative= for llama.cpp); 'fake' picks rag.fakes."""
    from . import fakes

    if fakes.is_fake(spec):
        return fakes.fake_generator(spec)
    target = resolve_model(spec, cache_dir, progress)
    is_gguf = isinstance(target, Path) and target.suffix == ".gguf"
    if backend == "auto":
        backend = "llama.cpp" if is_gguf and _has_llama_cpp() else "transformers"
    if backend == "llama.cpp":
        if not is_gguf:
            raise ModelNotInstalled(f"llama.cpp needs a .gguf file, got '{spec}'")
        return LlamaCppGenerator(target, model_id=spec, threads=threads, **options)
    if backend == "transformers":
        return TransformersGenerator(target, model_id=spec, cache_dir=cache_dir, threads=threads)
    raise ValueError(f"unknown backend '{backend}' (auto, llama.cpp, transformers)")


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def accept_draft(draft: Sequence[int], predicted: Sequence[int]) -> int:
    """Number of drafted tokens greedy decoding would have produced itself.

    `predicted[i]` is the model's argmax after the verified token and `draft[:i]`; the draft is kept
    up to its first disagreement, so the output is exactly the plain greedy output."""
    n = 0
    while n < len(draft) and n < len(predicted) and draft[n] == predicted[n]:
        n += 1
    return n


def greedy_decode(prompt: Sequence[int], first: int, decode, drop, is_eog, max_tokens: int,
                  propose=None, stats: dict | None = None) -> Iterator[int]:
    """Greedy decoding loop, optionally speculative; yields the generated tokens.

    decode(tokens) appends tokens to the model's context and returns the argmax after each of them;
    drop(n) removes the last n tokens from the context; propose(history, n) guesses up to n next tokens.
    A draft is checked in the same batch as the token before it, and kept only up to its first
    disagreement with the model, so the tokens are those plain greedy decoding would produce."""
    st = stats if stats is not None else {}
    for key in ("gen_tokens", "drafted", "accepted", "decode_calls"):
        st.setdefault(key, 0)
    history = list(prompt)
    token = first
    while True:
        if is_eog(token):
            return
        st["gen_tokens"] += 1
        yield token
        history.append(token)
        left = max_tokens - st["gen_tokens"]
        if left <= 0:
            return
        draft = list(propose(history, left - 1)) if propose and left > 1 else []
        predicted = decode([token, *draft])
        st["decode_calls"] += 1
        n_ok = accept_draft(draft, predicted)
        st["drafted"] += len(draft)
        st["accepted"] += n_ok
        if len(draft) > n_ok:
            drop(len(draft) - n_ok)  # keys/values of the rejected guesses
        for t in draft[:n_ok]:
            if is_eog(t):
                return
            st["gen_tokens"] += 1
            yield t
            history.append(t)
        token = predicted[n_ok]


def lookup_draft(history: Sequence[int], max_ngram: int = 3, n_draft: int = 8, min_ngram: int = 2) -> list[int]:
    """Prompt-lookup drafting: find the latest earlier occurrence of the last n-gram of `history`
    (longest n first) and propose the tokens that followed it. RAG answers copy phrases from the
    passages, so these guesses are often right, and they cost no model call to make."""
    import numpy as np

    h = np.asarray(history)
    for n in range(min(max_ngram, len(h) - 1), min_ngram - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(h[:-1], n)  # excludes the tail itself
        hits = np.flatnonzero((windows == h[-n:]).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return [int(t) for t in h[start:start + n_draft]]
    return []


def log_softmax_at(logits, index: int) -> float:
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    m = float(x.max())
    return float(x[index] - m - np.log(np.exp(x - m).sum()))


# ---------------------------------------------------------------- llama.cpp

class LlamaCppGenerator:
    backend = "llama.cpp"

    def __init__(self, path: Path, model_id: str | None = None, threads: int = 0, n_ctx: int = 4096,
                 n_batch: int = 512, n_ubatch: int = 256, flash_attn: bool = False,
                 kv_type: str = "f16", speculative: str = "none", n_draft: int = 8):
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError:
            raise ModelNotInstalled("llama-cpp-python is not installed (pip install llama-cpp-python)") from None
        kv_types = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}
        if kv_type not in kv_types:
            raise ValueError(f"unknown KV cache type '{kv_type}' ({', '.join(kv_types)})")
        if speculative not in SPECULATIVE:
            raise ValueError(f"unknown speculative mode '{speculative}' ({', '.join(SPECULATIVE)})")
        # n_ubatch 256: prompt processing 147 tok/s against 120 at 512 on this 2-core CPU (the committed
        # `rag bench tuning` table); smaller micro-batches keep the weight tiles in cache.
        self.model_id = model_id or str(path)
        self.path = Path(path)
        # threads=0: all cores while the machine is otherwise idle, fewer while other processes keep
        # cores busy (see choose_threads); an explicit count is used as given.
        self.auto_threads = not threads
        self.cores = physical_cores()
        self.threads = threads or self.cores
        self._cpu = CpuWatch()
        self.speculative = speculative
        self.n_draft = n_draft
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                             n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn, verbose=False,
                             type_k=kv_types[kv_type], type_v=kv_types[kv_type], logits_all=False)
        except (ValueError, RuntimeError) as e:
            raise ModelNotInstalled(f"cannot load {path}: {e}") from None
        self._c = llama_cpp
        self._ctx = self.llm._ctx
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)
        self.n_vocab = self.llm.n_vocab()
        self.n_ctx = self.llm.n_ctx()
        self.n_batch = n_batch
        from llama_cpp._internals import LlamaBatch

        self._batch = LlamaBatch(n_tokens=max(n_batch, n_draft + 1), embd=0, n_seq_max=1, verbose=False)
        self._kv: list[int] = []  # tokens whose keys/values are in the context, in position order
        self._snapshots: OrderedDict[tuple, ctypes.Array] = OrderedDict()  # prompt tokens -> saved KV state
        self._lock = threading.Lock()  # one llama context: one request at a time
        self.stats: dict = {}
        self.tokens_read = 0
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(template=self.llm.metadata.get("tokenizer.chat_template"),
                                              eos_token="<|im_end|>", bos_token="", add_generation_prompt=True)

    # -- tokens and the KV cache

    def chat_prompt(self, messages: list[dict], prefix: str = "") -> str:
        return self._formatter(messages=messages).prompt + prefix

    def prompt_tokens(self, messages: list[dict], prefix: str = "") -> list[int]:
        return self.llm.tokenize(self.chat_prompt(messages, prefix).encode(), add_bos=False, special=True)

    def _decode(self, tokens: Sequence[int], logits: str = "last") -> None:
        """Append `tokens` to the context; logits = "last" | "all" | "none" (which rows llama.cpp computes)."""
        b = self._batch.batch
        for i0 in range(0, len(tokens), self.n_batch):
            chunk = tokens[i0:i0 + self.n_batch]
            pos0 = len(self._kv)
            last_chunk = i0 + self.n_batch >= len(tokens)
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = pos0 + i
                b.seq_id[i][0] = 0
                b.n_seq_id[i] = 1
                b.logits[i] = logits == "all"
            if logits == "last" and last_chunk:
                b.logits[len(chunk) - 1] = True
            rc = self._c.llama_decode(self._ctx.ctx, b)
            if rc != 0:
                self._truncate(pos0)
                raise GenerationError(f"llama_decode failed (code {rc}; context {self.n_ctx} tokens)")
            self._kv.extend(chunk)

    def _set_threads(self) -> None:
        if not self.auto_threads:
            return
        n = choose_threads(self.cores, self._cpu.others(), self.threads)
        if n != self.threads:
            self._c.llama_set_n_threads(self._ctx.ctx, n, n)
            self.threads = n

    def clear_cache(self) -> None:
        """Forget the cached prompt (benchmarks use it to time a prompt from scratch)."""
        with self._lock:
            self._truncate(0)
            self._snapshots.clear()

    def _truncate(self, n: int) -> None:
        if n < len(self._kv):
            self._ctx.kv_cache_seq_rm(0, n, -1)
            del self._kv[n:]

    def _logits(self, i: int):
        """Logits row of the i-th token of the last batch (negative: from the end); valid until the next decode."""
        import numpy as np

        return np.ctypeslib.as_array(self._ctx.get_logits_ith(i), shape=(self.n_vocab,))

    def _prefill(self, tokens: list[int]) -> int:
        """Make the context hold exactly `tokens`, reusing the longest cached prefix (the live context or
        a snapshot); returns how many tokens were reused. The last token is always decoded again so
        that its logits are fresh."""
        if len(tokens) >= self.n_ctx:
            raise GenerationError(f"prompt is {len(tokens)} tokens; the context holds {self.n_ctx}")
        same = common_prefix(self._kv, tokens)
        key, best = max(((k, common_prefix(k, tokens)) for k in self._snapshots), key=lambda x: x[1],
                        default=(None, 0))
        if best > same + SNAPSHOT_MIN_GAIN and self._restore(key):
            same = best
        same = min(same, len(tokens) - 1)
        self._truncate(same)
        self.tokens_read += len(tokens) - same  # what the prompt cost, across calls (rag bench answer)
        self._decode(tokens[same:], logits="last")
        self._snapshot()
        return same

    # A follow-up question is first rewritten with a different prompt, which replaces the cached
    # answer prompt; snapshots of the last few prompts' keys/values (~29 KB per token for the 1.5B)
    # let the next answer reuse the system prompt + worked example again instead of recomputing them.

    def _snapshot(self) -> None:
        key = tuple(self._kv)
        for k in [k for k in self._snapshots if key[:len(k)] == k]:
            del self._snapshots[k]  # superseded: the new prompt extends it
        size = self._c.llama_state_seq_get_size(self._ctx.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        if self._c.llama_state_seq_get_data(self._ctx.ctx, buf, size, 0) == size:
            self._snapshots[key] = buf
            while len(self._snapshots) > SNAPSHOTS:
                self._snapshots.popitem(last=False)

    def _restore(self, key: tuple) -> bool:
        buf = self._snapshots[key]
        self._truncate(0)
        if not self._c.llama_state_seq_set_data(self._ctx.ctx, buf, len(buf), 0):
            self._ctx.kv_cache_seq_rm(0, 0, -1)
            del self._snapshots[key]
            return False
        self._kv = list(key)
        self._snapshots.move_to_end(key)
        return True

    def _is_eog(self, token: int) -> bool:
        return bool(self._c.llama_vocab_is_eog(self._vocab, token))

    # -- generation

    def generate_tokens(self, prompt: list[int], max_tokens: int) -> Iterator[int]:
        """Greedy tokens after `prompt` (the caller holds the lock)."""
        import numpy as np

        self._set_threads()
        t0 = time.perf_counter()
        st = self.stats = {"prompt_tokens": len(prompt), "cached_tokens": self._prefill(prompt),
                           "gen_tokens": 0, "drafted": 0, "accepted": 0, "decode_calls": 0,
                           "threads": self.threads}
        st["prefill_s"] = time.perf_counter() - t0
        first = int(np.argmax(self._logits(-1)))

        def decode(tokens: list[int]) -> list[int]:
            self._decode(tokens, logits="all" if len(tokens) > 1 else "last")
            return [int(np.argmax(self._logits(i))) for i in range(len(tokens))]

        def drop(n: int) -> None:
            self._truncate(len(self._kv) - n)

        def lookup(history: list[int], n: int) -> list[int]:
            return lookup_draft(history, n_draft=min(self.n_draft, n))

        propose = lookup if self.speculative == "prompt-lookup" else None
        limit = min(max_tokens, self.n_ctx - len(prompt) - self.n_draft - 1)
        t1 = time.perf_counter()
        try:
            yield from greedy_decode(prompt, first, decode, drop, self._is_eog, limit, propose, st)
        finally:
            st["gen_s"] = time.perf_counter() - t1

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "") -> Iterator[str]:
        prompt = self.prompt_tokens(messages, prefix)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a CJK character may span tokens
        with self._lock:
            try:
                for token in self.generate_tokens(prompt, max_tokens):
                    text = decoder.decode(self.llm.detokenize([token]))
                    if text:
                        yield text
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
            except (RuntimeError, ValueError) as e:
                raise GenerationError(f"generation failed: {e}") from None

    # -- scoring

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        """The prompt is evaluated once (or reused from the cache); each continuation is then decoded in
        one batch on top of it, with logits only for its own positions, and removed again."""
        import numpy as np

        prompt = self.prompt_tokens(messages, prefix)
        out = []
        with self._lock:
            self._set_threads()
            t0 = time.perf_counter()
            cached = self._prefill(prompt)
            base = np.array(self._logits(-1), dtype=np.float64)
            n0 = len(self._kv)
            n_eval = 0
            for cont in continuations:
                ctoks = self.llm.tokenize(cont.encode(), add_bos=False, special=False)
                if not ctoks:
                    out.append((0.0, 0))
                    continue
                total = log_softmax_at(base, ctoks[0])
                if len(ctoks) > 1:
                    if n0 + len(ctoks) >= self.n_ctx:
                        raise GenerationError(f"prompt + continuation exceed the {self.n_ctx}-token context")
                    if len(ctoks) - 1 > self.n_batch:  # only the last decode's logits rows are addressable
                        raise GenerationError(f"continuation longer than {self.n_batch} tokens")
                    self._decode(ctoks[:-1], logits="all")
                    n_eval += len(ctoks) - 1
                    for i in range(len(ctoks) - 1):
                        total += log_softmax_at(self._logits(i), ctoks[i + 1])
                    self._truncate(n0)
                out.append((total, len(ctoks)))
            self.stats = {"prompt_tokens": len(prompt), "cached_tokens": cached, "continuation_tokens": n_eval,
                          "score_s": time.perf_counter() - t0, "threads": self.threads}
        return out


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
        self.stats: dict = {}

    def prompt_ids(self, messages: list[dict], prefix: str = ""):
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "") -> Iterator[str]:
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(messages, prefix)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        error: list[BaseException] = []
        result = {}

        def run():
            import torch

            try:
                with torch.inference_mode():
                    out = self.model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=max_tokens,
                                              do_sample=False, streamer=streamer,
                                              pad_token_id=self.tokenizer.eos_token_id)
                eos = self.model.generation_config.eos_token_id
                eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
                new = [t for t in out[0, ids.shape[1]:].tolist() if t not in eos]
                result["n"] = len(new)
            except BaseException as e:  # surfaced to the caller below
                error.append(e)
                streamer.end()

        with self._lock:
            t0 = time.perf_counter()
            t_first = None
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            for piece in streamer:
                if piece:
                    if t_first is None:
                        t_first = time.perf_counter()
                    yield piece
            worker.join()
            t_end = time.perf_counter()
        if error:
            raise GenerationError(f"generation failed: {error[0]}")
        # The first token comes with the prompt's forward pass, so "prefill" here includes one sampled token.
        t_first = t_first or t_end
        self.stats = {"prompt_tokens": int(ids.shape[1]), "cached_tokens": 0, "gen_tokens": result.get("n", 0),
                      "prefill_s": t_first - t0, "gen_s": t_end - t_first}

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        """One forward pass over the prompt; each continuation runs on its KV cache, then is cropped off."""
        import torch

        ids = self.prompt_ids(messages, prefix)
        n0 = ids.shape[1]
        out = []
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            first = self.model(ids, use_cache=True)
            cache = first.past_key_values
            base_logp = torch.log_softmax(first.logits[0, -1].double(), -1)
            for cont in continuations:
                cids = self.tokenizer(cont, return_tensors="pt", add_special_tokens=False).input_ids
                if cids.shape[1] == 0:
                    out.append((0.0, 0))
                    continue
                total = float(base_logp[cids[0, 0]])
                if cids.shape[1] > 1:
                    logits = self.model(cids[:, :-1], past_key_values=cache, use_cache=True).logits[0]
                    cache.crop(n0 - cache.get_seq_length())  # negative: drop this continuation again
                    logp = torch.log_softmax(logits.double(), -1)
                    total += float(logp.gather(1, cids[0, 1:, None]).sum())
                out.append((total, int(cids.shape[1])))
            self.stats = {"prompt_tokens": int(n0), "cached_tokens": 0, "score_s": time.perf_counter() - t0}
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
