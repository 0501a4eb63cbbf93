"""Passages the model has read before: which prompt tokens can be linked from a passage's KV cache.

A passage (a note chunk: its heading and its sentences) is read once, right after the fixed opening of
the evidence prompt, and its keys/values are kept (rag.generators.chunk_kv). A later prompt that quotes
the passage's heading or sentences gets those tokens' keys/values copied in and moved to their new
positions (llama.cpp re-rotates the keys: RoPE), instead of reading them again; only the text around
them (labels, the question, the chat template) is read. The copied tokens attended to their own passage
and the opening, not to the other passages of this prompt (TurboRAG, arXiv 2410.07590).

`plan` turns a rendered prompt into that list: plain token ids, and `Linked` tokens that say which
passage and which of its tokens they are. Each piece of a passage is tokenized on its own, here and
when the passage's cache is built, so a quoted sentence is always the same run of tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

MIN_LINK_CHARS = 4  # shorter pieces ("-", "是。") would match the template or the question by accident


@dataclass(frozen=True)
class Passage:
    """Text the model may have read before, in pieces that are tokenized one by one: the heading, then
    the body's sentences and the white space between them (they concatenate to the body)."""

    pieces: tuple[str, ...]

    @cached_property  # read for every linked token of a prompt
    def key(self) -> str:
        """Content hash: a changed note is a new passage, and its old cache is never used for it."""
        return hashlib.sha256("\x1f".join(self.pieces).encode()).hexdigest()[:32]

    def linkable(self, i: int) -> bool:
        p = self.pieces[i]
        return len(p) >= MIN_LINK_CHARS and p == p.strip()


@dataclass(frozen=True)
class Linked:
    """A prompt token whose keys/values come from a passage's cache: the `offset`-th token of the passage."""

    token: int
    passage: str  # Passage.key
    offset: int


def plain(items: Sequence) -> list[int]:
    return [x.token if isinstance(x, Linked) else x for x in items]


def plan(prompt: str, start: int, passages: Sequence[Passage], tokenize: Callable[[str, bool], list[int]],
         passage_tokens: Callable[[Passage], list[list[int]]]) -> list:
    """The prompt as items: every occurrence (at or after character `start`) of a linkable passage piece
    becomes that piece's `Linked` tokens; the text between them is tokenized as usual (special tokens
    allowed: it holds the chat template). Occurrences are taken left to right, the longest at a tie."""
    pieces = [(p, i) for p in passages for i in range(len(p.pieces)) if p.linkable(i)]
    spans = []
    pos = start
    while pieces:
        best = None
        for p, i in pieces:
            text = p.pieces[i]
            j = prompt.find(text, pos)
            if j >= 0 and (best is None or j < best[0] or (j == best[0] and j + len(text) > best[1])):
                best = (j, j + len(text), p, i)
        if best is None:
            break
        spans.append(best)
        pos = best[1]
    # Two quoted pieces of one passage with exactly the passage's own text between them (the "\n" after
    # the heading, the gap between adjacent sentences) become one linked stretch: fewer, longer links,
    # and fewer plain stretches to read one by one.
    merged: list[list] = []
    for j, end, p, i in spans:
        last = merged[-1] if merged else None
        if last and last[2] is p and i > last[4] and prompt[last[1]:j] == "".join(p.pieces[last[4] + 1:i]):
            last[1], last[4] = end, i
        else:
            merged.append([j, end, p, i, i])
    items: list = []
    cur = 0
    for j, end, p, i0, i1 in merged:
        if j > cur:
            items += tokenize(prompt[cur:j], True)
        toks = passage_tokens(p)
        off = sum(len(t) for t in toks[:i0])
        for t in (t for piece in toks[i0:i1 + 1] for t in piece):
            items.append(Linked(t, p.key, off))
            off += 1
        cur = end
    if cur < len(prompt):
        items += tokenize(prompt[cur:], True)
    return items


def runs(items: Sequence, start: int) -> list[tuple[int, str, int, int]]:
    """(position, passage key, first offset, length) of each stretch of consecutive tokens of one passage
    from position `start` on."""
    out: list[list] = []
    for pos in range(start, len(items)):
        x = items[pos]
        if not isinstance(x, Linked):
            continue
        last = out[-1] if out else None
        if last and last[1] == x.passage and last[0] + last[3] == pos and last[2] + last[3] == x.offset:
            last[3] += 1
        else:
            out.append([pos, x.passage, x.offset, 1])
    return [tuple(r) for r in out]
