"""The llama.cpp KV cache: which tokens' keys/values the context holds, and snapshots of past prompts.

`KVCache` is the logic (longest-common-prefix reuse, truncation, logits rows, an LRU of prompt
snapshots) and is tested with a fake context; `LlamaContext` is the handful of llama.cpp calls it
makes, all on llama-cpp-python's public API (`Llama.ctx` and the low-level `llama_cpp.llama_*`
functions). Sequence 0 holds the prompt (one request at a time per model); sequence 1 is scratch space
where a passage's keys/values are computed or loaded before they are linked into sequence 0
(rag.generators.linking).
"""

from __future__ import annotations

import ctypes
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ..errors import GenerationError
from .decoding import common_prefix
from .linking import Linked, plain, runs

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

    def decode_at(self, tokens: Sequence[int], positions: Sequence[int], logits_last: bool) -> int:
        """Add `tokens` at the given (not necessarily consecutive) positions; 0 on success."""

    def compute_passage(self, prefix_len: int, tokens: Sequence[int]):
        """Keys/values of `tokens` read after the first `prefix_len` held positions, saved; None on failure."""

    def link(self, state, prefix_len: int, moves: Sequence[tuple[int, int, int]]) -> bool:
        """Copy slices (first offset, length, new position) of a saved passage into the prompt."""


PASSAGE_STATS = ("linked", "passage_tokens_read", "link_failures", "plain_stretches")


@dataclass
class PassageKV:
    """What `KVCache.prefill` needs to link passages: their tokens by key, and where their caches live
    (a rag.generators.chunk_kv.ChunkKVStore: get(key, prefix, tokens) / put(key, prefix, tokens, state))."""

    tokens: dict[str, list[int]]
    store: object
    stats: dict = field(default_factory=lambda: dict.fromkeys(PASSAGE_STATS, 0))


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
        return self._decode(tokens, range(pos0, pos0 + len(tokens)), logits, 0)

    def decode_at(self, tokens: Sequence[int], positions: Sequence[int], logits_last: bool) -> int:
        return self._decode(tokens, positions, "last" if logits_last else "none", 0)

    def _decode(self, tokens: Sequence[int], positions: Sequence[int], logits: str, seq: int) -> int:
        b = self._batch
        b.n_tokens = len(tokens)
        for i, (t, p) in enumerate(zip(tokens, positions)):
            b.token[i] = t
            b.pos[i] = p
            b.seq_id[i][0] = seq
            b.n_seq_id[i] = 1
            b.logits[i] = logits == "all"
        if logits == "last":
            b.logits[len(tokens) - 1] = True
        return self._c.llama_decode(self.ctx, b)

    def compute_passage(self, prefix_len: int, tokens: Sequence[int]):
        c, m = self._c, self._memory
        c.llama_memory_seq_rm(m, 1, -1, -1)
        c.llama_memory_seq_cp(m, 0, 1, 0, prefix_len)  # shares the cells: the opening is not read again
        try:
            for i0 in range(0, len(tokens), self.batch_size):
                part = tokens[i0:i0 + self.batch_size]
                if self._decode(part, range(prefix_len + i0, prefix_len + i0 + len(part)), "none", 1) != 0:
                    return None
            c.llama_memory_seq_rm(m, 1, 0, prefix_len)  # keep the passage's own cells only
            return self.save(1)
        finally:
            c.llama_memory_seq_rm(m, 1, -1, -1)

    def link(self, state, prefix_len: int, moves: Sequence[tuple[int, int, int]]) -> bool:
        c, m = self._c, self._memory
        c.llama_memory_seq_rm(m, 1, -1, -1)
        try:
            if not self.load(state, 1):
                return False
            # Park the passage beyond every prompt position first, so that a slice moved to its new place
            # never lands inside the position range of a slice still to be moved.
            far = self.n_ctx
            c.llama_memory_seq_add(m, 1, -1, -1, far)
            for off, n, pos in moves:
                a = far + prefix_len + off
                c.llama_memory_seq_add(m, 1, a, a + n, pos - a)  # the keys are re-rotated (RoPE) on the next decode
                c.llama_memory_seq_cp(m, 1, 0, pos, pos + n)
                c.llama_memory_seq_rm(m, 1, pos, pos + n)
            return True
        finally:
            c.llama_memory_seq_rm(m, 1, -1, -1)

    def remove(self, pos0: int) -> None:
        self._c.llama_memory_seq_rm(self._memory, 0, pos0, -1)

    def logits(self, i: int):
        import numpy as np

        return np.ctypeslib.as_array(self._c.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))

    def save(self, seq: int = 0):
        size = self._c.llama_state_seq_get_size(self.ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        return buf if self._c.llama_state_seq_get_data(self.ctx, buf, size, seq) == size else None

    def load(self, state, seq: int = 0) -> bool:
        if isinstance(state, (bytes, bytearray)):
            state = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        return bool(self._c.llama_state_seq_set_data(self.ctx, state, len(state), seq))

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

    def prefill(self, tokens: list, passages: PassageKV | None = None) -> int:
        """Make the context hold exactly `tokens`, reusing the longest cached prefix (the live context or
        a snapshot); returns how many tokens were reused. The last token is always decoded again so
        that its logits are fresh. `Linked` items (rag.generators.linking) are copied from their
        passage's cache when `passages` is given (computed and stored on first use), else read."""
        if len(tokens) >= self.n_ctx:
            raise GenerationError(f"prompt is {len(tokens)} tokens; the context holds {self.n_ctx}")
        tokens = list(tokens) if passages is not None else plain(tokens)
        if tokens and isinstance(tokens[-1], Linked):
            tokens[-1] = tokens[-1].token  # its logits are needed: it is read, not linked
        same = common_prefix(self.tokens, tokens)
        key, best = max(((k, common_prefix(k, tokens)) for k in self.snapshots), key=lambda x: x[1],
                        default=(None, 0))
        if best > same + self.min_gain and self._restore(key):
            same = best
        same = min(same, len(tokens) - 1)
        self.truncate(same)
        if passages is None or not any(isinstance(x, Linked) for x in tokens[same:]):
            self.tokens_read += len(tokens) - same
            self.decode(plain(tokens[same:]), logits="last")
        else:
            self._link(tokens, same, passages)
        self._snapshot()
        return same

    def _link(self, items: list, same: int, passages: PassageKV) -> None:
        """Fill positions `same`... of `items`: the plain run up to the first linked token is read, each
        passage's cache is fetched (or computed after that run, and stored), then its slices are copied to
        their positions and the plain stretches between them read, left to right."""
        first = next(i for i, x in enumerate(items) if isinstance(x, Linked))
        prefix = plain(items[:first])
        if same < first:
            self.tokens_read += first - same
            self.decode(prefix[same:], logits="none")
        start = max(same, first)
        todo = runs(items, start)
        states = {key: passages.store.get(key, prefix, passages.tokens[key]) or self._compute(key, prefix, passages)
                  for key in dict.fromkeys(r[1] for r in todo)}
        # llama.cpp takes a sequence's new tokens only right after its last held position, so the prompt
        # is filled left to right: each plain stretch is read once the links before it are in place.
        pos = start
        for at, key, off, n in todo + [(len(items), None, 0, 0)]:
            if at > pos:
                passages.stats["plain_stretches"] += 1
                self._read_at(items, list(range(pos, at)), start, last=at == len(items))
            if key is None:
                break
            if states[key] is not None and self.ctx.link(states[key], first, [(off, n, at)]):
                passages.stats["linked"] += n
            else:  # refused by llama.cpp: read instead, and say so, so no later prompt reuses it as linked
                passages.stats["link_failures"] += 1
                for p in range(at, at + n):
                    items[p] = items[p].token
                self._read_at(items, list(range(at, at + n)), start, last=at + n == len(items))
            pos = at + n
        self.tokens[start:] = items[start:]

    def ensure_passages(self, items: list, passages: PassageKV) -> int:
        """Compute and store the caches of the passages linked in `items` that have none yet (`rag index`
        builds them ahead of the questions); returns how many were computed."""
        first = next((i for i, x in enumerate(items) if isinstance(x, Linked)), None)
        if first is None:
            return 0
        prefix = plain(items[:first])
        missing = [k for k in dict.fromkeys(r[1] for r in runs(items, first))
                   if passages.store.get(k, prefix, passages.tokens[k]) is None]
        if not missing:
            return 0
        self.prefill(prefix)  # the context holds exactly the opening, which the passages are read after
        return sum(self._compute(key, prefix, passages) is not None for key in missing)

    def _compute(self, key: str, prefix: list[int], passages: PassageKV) -> bytes | None:
        """Read one passage after the opening (held at positions 0..len(prefix)), store its cache."""
        toks = passages.tokens[key]
        state = self.ctx.compute_passage(len(prefix), toks)
        passages.stats["passage_tokens_read"] += len(toks)
        if state is None:
            return None
        state = bytes(state)
        passages.store.put(key, prefix, toks, state)
        return state

    def _read_at(self, items: list, positions: list[int], start: int, last: bool) -> None:
        self.tokens_read += len(positions)
        for i0 in range(0, len(positions), self.n_batch):
            pos = positions[i0:i0 + self.n_batch]
            rc = self.ctx.decode_at([items[p] for p in pos], pos, last and i0 + self.n_batch >= len(positions))
            if rc != 0:
                self.ctx.remove(start)
                del self.tokens[start:]
                raise GenerationError(f"llama_decode failed (code {rc}; context {self.n_ctx} tokens)")

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
