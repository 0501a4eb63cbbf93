"""The llama.cpp KV cache: which tokens' keys/values the context holds, and snapshots of past prompts.

`KVCache` is the logic (longest-common-prefix reuse, truncation, logits rows, an LRU of prompt
snapshots) and is tested with a fake context; `LlamaContext` is the handful of llama.cpp calls it
makes, all on llama-cpp-python's public API (`Llama.ctx` and the low-level `llama_cpp.llama_*`
functions). Only sequence 0 is used: one request at a time per model.
"""

from __future__ import annotations

import ctypes
import weakref
from collections import OrderedDict
from typing import Protocol, Sequence

from ..errors import GenerationError
from .decoding import common_prefix

SNAPSHOTS = 4  # prompt KV snapshots kept per llama.cpp model (~25 MB each for a 900-token prompt)
SNAPSHOT_MIN_GAIN = 32  # restoring costs a copy; only worth it when it saves this many tokens


class Context(Protocol):
    """What `KVCache` needs from a model context (`LlamaContext`, or a fake in the tests)."""

    n_ctx: int

    def decode(self, tokens: Sequence[int], pos0: int, logits: str) -> int:
        """Append `tokens` at positions pos0...; logits = "all" | "last" | "none"; 0 on success."""

    def remove(self, pos0: int) -> None:
        """Drop the keys/values from position `pos0` on."""

    def logits(self, i: int):
        """Logits row of the i-th token of the last decode (negative: from the end)."""

    def save(self):
        """A copy of the keys/values, or None when it could not be taken."""

    def load(self, state) -> bool:
        """Replace the keys/values by a saved copy; False if llama.cpp refused it."""


class LlamaContext:
    """A llama-cpp-python `Llama`'s context, driven token batch by token batch. `Llama.eval` cannot be
    used: it computes logits for the last token only (or, with logits_all=True, for every prompt
    token, which makes prompt processing ~4x slower), and speculative drafts and scoring need them
    for a few chosen positions."""

    def __init__(self, llm, batch_size: int):
        import llama_cpp

        self._c = llama_cpp
        self.llm = llm  # keeps the model and its context alive while this wrapper is
        self.ctx = llm.ctx
        self.n_ctx = llm.n_ctx()
        self.n_vocab = llm.n_vocab()
        self.batch_size = batch_size
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._batch = llama_cpp.llama_batch_init(batch_size, 0, 1)
        weakref.finalize(self, llama_cpp.llama_batch_free, self._batch)

    def decode(self, tokens: Sequence[int], pos0: int, logits: str) -> int:
        b = self._batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.seq_id[i][0] = 0
            b.n_seq_id[i] = 1
            b.logits[i] = logits == "all"
        if logits == "last":
            b.logits[len(tokens) - 1] = True
        return self._c.llama_decode(self.ctx, b)

    def remove(self, pos0: int) -> None:
        self._c.llama_memory_seq_rm(self._memory, 0, pos0, -1)

    def logits(self, i: int):
        import numpy as np

        return np.ctypeslib.as_array(self._c.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))

    def save(self):
        size = self._c.llama_state_seq_get_size(self.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        return buf if self._c.llama_state_seq_get_data(self.ctx, buf, size, 0) == size else None

    def load(self, state) -> bool:
        return bool(self._c.llama_state_seq_set_data(self.ctx, state, len(state), 0))

    def set_threads(self, n: int) -> None:
        self._c.llama_set_n_threads(self.ctx, n, n)


class KVCache:
    """The tokens whose keys/values are in the context (`tokens`, in position order), kept in step
    with the context, plus snapshots of recent prompts.

    A follow-up question is first rewritten with a different prompt, which replaces the cached
    answer prompt; snapshots of the last few prompts' keys/values (~29 KB per token for the 1.5B)
    let the next answer reuse the system prompt + worked example again instead of recomputing them."""

    def __init__(self, ctx: Context, n_batch: int, snapshots: int = SNAPSHOTS, min_gain: int = SNAPSHOT_MIN_GAIN):
        self.ctx = ctx
        self.n_ctx = ctx.n_ctx
        self.n_batch = n_batch
        self.max_snapshots = snapshots
        self.min_gain = min_gain
        self.tokens: list[int] = []
        self.snapshots: OrderedDict[tuple, object] = OrderedDict()  # prompt tokens -> saved keys/values
        self.tokens_read = 0  # prompt tokens actually decoded, across calls (rag bench answer)

    def __len__(self) -> int:
        return len(self.tokens)

    def prefill(self, tokens: list[int]) -> int:
        """Make the context hold exactly `tokens`, reusing the longest cached prefix (the live context or
        a snapshot); returns how many tokens were reused. The last token is always decoded again so
        that its logits are fresh."""
        if len(tokens) >= self.n_ctx:
            raise GenerationError(f"prompt is {len(tokens)} tokens; the context holds {self.n_ctx}")
        same = common_prefix(self.tokens, tokens)
        key, best = max(((k, common_prefix(k, tokens)) for k in self.snapshots), key=lambda x: x[1],
                        default=(None, 0))
        if best > same + self.min_gain and self._restore(key):
            same = best
        same = min(same, len(tokens) - 1)
        self.truncate(same)
        self.tokens_read += len(tokens) - same
        self.decode(tokens[same:], logits="last")
        self._snapshot()
        return same

    def decode(self, tokens: Sequence[int], logits: str = "last") -> None:
        """Append `tokens`; logits = "last" | "all" | "none" (which rows llama.cpp computes). Only the
        last batch's rows stay readable, so "all" is for at most `n_batch` tokens."""
        for i0 in range(0, len(tokens), self.n_batch):
            chunk = tokens[i0:i0 + self.n_batch]
            last_chunk = i0 + self.n_batch >= len(tokens)
            pos0 = len(self.tokens)
            rc = self.ctx.decode(chunk, pos0, logits if logits != "last" or last_chunk else "none")
            if rc != 0:
                self.ctx.remove(pos0)  # whatever part of the failed batch llama.cpp kept
                raise GenerationError(f"llama_decode failed (code {rc}; context {self.n_ctx} tokens)")
            self.tokens.extend(chunk)

    def logits(self, i: int):
        """Logits row of the i-th token of the last decode (negative: from the end); valid until the next one."""
        return self.ctx.logits(i)

    def truncate(self, n: int) -> None:
        """Keep the first `n` tokens' keys/values."""
        if n < len(self.tokens):
            self.ctx.remove(n)
            del self.tokens[n:]

    def clear(self) -> None:
        """Forget the live context and every snapshot."""
        self.truncate(0)
        self.snapshots.clear()

    def _snapshot(self) -> None:
        key = tuple(self.tokens)
        for k in [k for k in self.snapshots if key[:len(k)] == k]:
            del self.snapshots[k]  # superseded: the new prompt extends it
        state = self.ctx.save()
        if state is not None:
            self.snapshots[key] = state
            while len(self.snapshots) > self.max_snapshots:
                self.snapshots.popitem(last=False)

    def _restore(self, key: tuple) -> bool:
        state = self.snapshots[key]
        self.truncate(0)
        if not self.ctx.load(state):
            self.ctx.remove(0)
            del self.snapshots[key]
            return False
        self.tokens = list(key)
        self.snapshots.move_to_end(key)
        return True
