"""`LlamaCppGenerator`: GGUF models on llama.cpp (the default for .gguf: ~15x faster than fp32 torch here).

It drives the llama.cpp context through `KVCache` instead of `create_chat_completion`, so that it can
(a) keep the KV cache of the longest common token prefix between calls (system prompt + few-shot
demo are identical across questions), (b) ask llama.cpp for logits only at the positions it needs
(`logits_all=True` makes prompt processing ~4x slower), and (c) verify drafted tokens in one batch.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..cpu import CpuWatch, choose_threads, physical_cores
from ..errors import GenerationError, ModelNotInstalled
from .decoding import greedy_decode, log_softmax_at, lookup_draft
from .kv_cache import PASSAGE_STATS, KVCache, LlamaContext, PassageKV
from .linking import Passage, plain, plan

PASSAGE_TOKENS_KEPT = 512  # passages whose per-piece tokens are remembered (tokenizing is cheap, not free)

SPECULATIVE = ("none", "prompt-lookup")


class LlamaCppGenerator:
    backend = "llama.cpp"

    def __init__(self, path: Path, model_id: str | None = None, threads: int = 0, n_ctx: int = 4096,
                 n_batch: int = 512, n_ubatch: int = 256, flash_attn: bool = False,
                 kv_type: str = "f16", speculative: str = "none", n_draft: int = 8,
                 passage_cache: Path | None = None, passage_cache_mb: int = 2048):
        if not threads:
            # OpenMP threads spin between operations instead of sleeping: generation 25.0 against 18.1 tok/s
            # on an idle 2-core machine (same prefill). Spinning only hurts when another process wants the
            # core, and then the adaptive thread count (rag.cpu) runs one thread, which has nobody to wait
            # for: 17.0 vs 17.4 tok/s (eval/results/omp_wait.md). Read once, when libgomp loads.
            os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
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
        self.model_id = model_id or str(path)
        self.path = Path(path)
        # threads=0: all cores while the machine is otherwise idle, fewer while other processes keep
        # cores busy (see rag.cpu.choose_threads); an explicit count is used as given.
        self.auto_threads = not threads
        self.cores = physical_cores()
        self.threads = threads or self.cores
        self._cpu = CpuWatch()
        self.speculative = speculative
        self.n_draft = n_draft
        # n_ubatch 256: prompt processing 147 tok/s against 120 at 512 on this 2-core CPU (the committed
        # `rag bench tuning` table); smaller micro-batches keep the weight tiles in cache.
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                             n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn, verbose=False,
                             type_k=kv_types[kv_type], type_v=kv_types[kv_type], logits_all=False)
        except (ValueError, RuntimeError) as e:
            raise ModelNotInstalled(f"cannot load {path}: {e}") from None
        if passage_cache is not None and not _two_sequences(self.llm):
            passage_cache = None  # this llama-cpp-python cannot: every prompt is read in full, as before
        self._is_eog_token = llama_cpp.llama_vocab_is_eog
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._context = LlamaContext(self.llm, max(n_batch, n_draft + 1))
        self.kv = KVCache(self._context, n_batch)
        self.n_ctx = self.kv.n_ctx
        self.n_batch = n_batch
        self._lock = threading.Lock()  # one llama context: one request at a time
        self.stats: dict = {}
        self.passage_store = None
        if passage_cache is not None:
            from .chunk_kv import ChunkKVStore

            # The saved keys/values fit this model file, KV type and llama.cpp build only.
            st = self.path.stat()
            key = f"{self.path.name}|{st.st_size}|{kv_type}|llama-cpp-python {llama_cpp.__version__}"
            self.passage_store = ChunkKVStore(Path(passage_cache), key, passage_cache_mb * 2 ** 20)
        self._passage_tokens: dict[str, list[list[int]]] = {}
        self.passage_stats = dict.fromkeys(PASSAGE_STATS, 0)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(template=self.llm.metadata.get("tokenizer.chat_template"),
                                              eos_token="<|im_end|>", bos_token="", add_generation_prompt=True)

    @property
    def links_passages(self) -> bool:
        """Whether `passages=` is used (per-chunk KV caches), not only accepted."""
        return self.passage_store is not None

    @property
    def tokens_read(self) -> int:
        """Prompt tokens the model actually read, across calls, after KV reuse (rag bench answer)."""
        return self.kv.tokens_read

    def chat_prompt(self, messages: list[dict], prefix: str = "") -> str:
        return self._formatter(messages=messages).prompt + prefix

    def prompt_tokens(self, messages: list[dict], prefix: str = "") -> list[int]:
        return self._tokenize(self.chat_prompt(messages, prefix), True)

    def _tokenize(self, text: str, special: bool) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=special)

    def _pieces(self, p: Passage) -> list[list[int]]:
        toks = self._passage_tokens.get(p.key)
        if toks is None:
            toks = [self._tokenize(piece, False) for piece in p.pieces]
            if len(self._passage_tokens) >= PASSAGE_TOKENS_KEPT:
                self._passage_tokens.pop(next(iter(self._passage_tokens)))
            self._passage_tokens[p.key] = toks
        return toks

    def prompt_items(self, messages: list[dict], prefix: str = "", passages: Sequence[Passage] = ()):
        """The prompt's tokens, and what `KVCache.prefill` needs to link `passages` into it: their text in
        the last user message is linked from the passages' caches instead of being read (None: read all)."""
        if not passages or self.passage_store is None:
            return self.prompt_tokens(messages, prefix), None
        text = self.chat_prompt(messages, prefix)
        start = text.rfind(messages[-1]["content"]) if messages else -1
        if start < 0:
            return self.prompt_tokens(messages, prefix), None
        items = plan(text, start, passages, self._tokenize, self._pieces)
        tokens = {p.key: [t for piece in self._pieces(p) for t in piece] for p in passages}
        return items, PassageKV(tokens, self.passage_store, self.passage_stats)

    def clear_cache(self) -> None:
        """Forget the cached prompt (benchmarks use it to time a prompt from scratch)."""
        with self._lock:
            self.kv.clear()

    def _set_threads(self) -> None:
        if not self.auto_threads:
            return
        n = choose_threads(self.cores, self._cpu.others(), self.threads)
        if n != self.threads:
            self._context.set_threads(n)
            self.threads = n

    def _is_eog(self, token: int) -> bool:
        return bool(self._is_eog_token(self._vocab, token))

    # -- generation

    def generate_tokens(self, prompt: list, max_tokens: int, passages: PassageKV | None = None) -> Iterator[int]:
        """Greedy tokens after `prompt` (the caller holds the lock)."""
        import numpy as np

        self._set_threads()
        t0 = time.perf_counter()
        read0 = self.kv.tokens_read
        cached = self.kv.prefill(prompt, passages)
        prompt = plain(prompt)
        st = self.stats = {"prompt_tokens": len(prompt), "cached_tokens": cached,
                           "read_tokens": self.kv.tokens_read - read0,
                           "gen_tokens": 0, "drafted": 0, "accepted": 0, "decode_calls": 0,
                           "threads": self.threads}
        st["prefill_s"] = time.perf_counter() - t0
        first = int(np.argmax(self.kv.logits(-1)))

        def decode(tokens: list[int]) -> list[int]:
            self.kv.decode(tokens, logits="all" if len(tokens) > 1 else "last")
            return [int(np.argmax(self.kv.logits(i))) for i in range(len(tokens))]

        def drop(n: int) -> None:
            self.kv.truncate(len(self.kv) - n)

        def lookup(history: list[int], n: int) -> list[int]:
            return lookup_draft(history, n_draft=min(self.n_draft, n))

        propose = lookup if self.speculative == "prompt-lookup" else None
        limit = min(max_tokens, self.n_ctx - len(prompt) - self.n_draft - 1)
        t1 = time.perf_counter()
        try:
            yield from greedy_decode(prompt, first, decode, drop, self._is_eog, limit, propose, st)
        finally:
            st["gen_s"] = time.perf_counter() - t1

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "",
               passages: Sequence[Passage] = ()) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a CJK character may span tokens
        with self._lock:
            prompt, linker = self.prompt_items(messages, prefix, passages)
            try:
                for token in self.generate_tokens(prompt, max_tokens, linker):
                    text = decoder.decode(self.llm.detokenize([token]))
                    if text:
                        yield text
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
            except (RuntimeError, ValueError) as e:
                raise GenerationError(f"generation failed: {e}") from None

    def cache_passages(self, messages: list[dict], passages: Sequence[Passage]) -> int:
        """Build the stored caches of `passages` as they appear in this prompt, without answering."""
        with self._lock:  # prompt_items fills the passage-token memo
            items, linker = self.prompt_items(messages, "", passages)
            if linker is None:
                return 0
            try:
                return self.kv.ensure_passages(items, linker)
            except (RuntimeError, ValueError) as e:
                raise GenerationError(f"caching passages failed: {e}") from None

    # -- scoring

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str],
              passages: Sequence[Passage] = ()) -> list[tuple[float, int]]:
        """The prompt is evaluated once (or reused from the cache); each continuation is then decoded in
        one batch on top of it, with logits only for its own positions, and removed again."""
        import numpy as np

        out = []
        with self._lock:
            prompt, linker = self.prompt_items(messages, prefix, passages)
            self._set_threads()
            t0 = time.perf_counter()
            cached = self.kv.prefill(prompt, linker)
            base = np.array(self.kv.logits(-1), dtype=np.float64)
            n_eval = 0
            for cont in continuations:
                ctoks = self.llm.tokenize(cont.encode(), add_bos=False, special=False)
                total = self._continuation_logp(base, ctoks) if ctoks else 0.0
                n_eval += max(0, len(ctoks) - 1)
                out.append((total, len(ctoks)))
            self.stats = {"prompt_tokens": len(prompt), "cached_tokens": cached, "continuation_tokens": n_eval,
                          "score_s": time.perf_counter() - t0, "threads": self.threads}
        return out

    def _continuation_logp(self, base, ctoks: list[int]) -> float:
        """Log-probability of `ctoks` after the cached prompt, whose next-token logits are `base`;
        the cache is left as found."""
        total = log_softmax_at(base, ctoks[0])
        if len(ctoks) < 2:
            return total
        n0 = len(self.kv)
        if n0 + len(ctoks) >= self.n_ctx:
            raise GenerationError(f"prompt + continuation exceed the {self.n_ctx}-token context")
        if len(ctoks) - 1 > self.n_batch:  # only the last decode's logits rows are addressable
            raise GenerationError(f"continuation longer than {self.n_batch} tokens")
        self.kv.decode(ctoks[:-1], logits="all")
        for i in range(len(ctoks) - 1):
            total += log_softmax_at(self.kv.logits(i), ctoks[i + 1])
        self.kv.truncate(n0)
        return total


def _two_sequences(llm) -> bool:
    """Give `llm` a context with a second sequence and one KV buffer shared by both (kv_unified), which
    linking passages needs (sequence 1 is where a passage's cache is loaded before its cells are handed
    to sequence 0). llama-cpp-python's `Llama` has no parameter for it, so the context it made is replaced
    by one with the same parameters plus these two; False (the old context kept) where that fails."""
    try:
        from llama_cpp import _internals

        params = type(llm.context_params).from_buffer_copy(llm.context_params)  # the old ones stay if this fails
        params.n_seq_max = 2
        params.kv_unified = True
        ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=llm.verbose)
    except (ImportError, AttributeError, TypeError, ValueError, RuntimeError):
        return False
    llm._ctx.close()
    llm._ctx, llm.context_params = ctx, params
    llm._stack.callback(ctx.close)
    return True
