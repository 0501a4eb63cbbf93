"""Decoding logic that needs no model: greedy decoding with speculative drafts, prompt-lookup drafting,
prefix matching and log-probabilities. The backends pass in callables that touch the model."""

from __future__ import annotations

from typing import Iterator, Sequence


def common_prefix(a: Sequence, b: Sequence) -> int:
    """Length of the longest common prefix of two sequences (token lists, tuples or strings)."""
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
