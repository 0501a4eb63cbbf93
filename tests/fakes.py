"""Small deterministic stand-ins for the real models (fast unit tests only)."""

from __future__ import annotations

import hashlib
import re
from typing import Iterator, Sequence

import numpy as np


class FakeEmbedder:
    """Hashed character-bigram vectors: similar strings get similar vectors, no model needed."""

    def __init__(self, dim: int = 64, model_id: str = "fake-embedder"):
        self.dim = dim
        self.model_id = model_id
        self.calls = 0

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        s = re.sub(r"\s+", "", text.lower())
        for i in range(max(len(s) - 1, 1)):
            h = int.from_bytes(hashlib.md5(s[i:i + 2].encode()).digest()[:4], "little")
            v[h % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vec(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


class FakeGenerator:
    """Answers with the first sentence of passage [1], cited, streamed in small pieces."""

    model_id = "fake-generator"
    backend = "fake"

    def __init__(self, reply: str | None = None):
        self.reply = reply
        self.prompts: list[list[dict]] = []
        self.prefixes: list[str] = []

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "") -> Iterator[str]:
        self.prompts.append(messages)
        self.prefixes.append(prefix)
        text = self.reply
        if text is None:
            user = messages[-1]["content"]
            m = re.search(r"\[1\][^\n]*\n([^。\n]{4,80})", user)
            n = 1
            if prefix:  # after the system-written quote: conclude by restating the quoted sentence
                m = re.search(r"“([^。”\n]{4,80})", prefix) or m
                n = int(re.search(r"\[(\d+)\]", prefix).group(1))
            text = (m.group(1).strip() + f" [{n}]。") if m else "资料中没有相关内容。"
        for i in range(0, len(text), 3):
            yield text[i:i + 3]

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        context = messages[-1]["content"]
        out = []
        for c in continuations:
            grams = {c[i:i + 2] for i in range(len(c) - 1)} or {c}
            hit = sum(1 for g in grams if g in context) / len(grams)
            out.append((float(np.log(hit + 1e-3)), max(1, len(c) // 2)))
        return out


class ScriptedGenerator(FakeGenerator):
    """The fake answer paced at `delay` s per piece, with misbehaviour on cue (server tests, soak):
    a question containing stallnow (lower case: a capitalized unknown name would be declined before the
    model is asked) yields two pieces and then blocks until `unblock` is set (a wedged
    model); slownow keeps yielding a short sentence every 0.2 s until closed. Follow-up rewrite prompts get
    `rewrite` when it is set. `produced` counts the pieces handed out."""

    def __init__(self, delay: float = 0.0, rewrite: str | None = None):
        import threading
        from collections import deque

        super().__init__()
        self.prompts = deque(maxlen=16)  # recent prompts only: a soak sends thousands
        self.prefixes = deque(maxlen=16)
        self.delay = delay
        self.rewrite = rewrite
        self.unblock = threading.Event()
        self.produced = 0

    def stream(self, messages, max_tokens=256, prefix=""):
        import time

        from rag import prompts

        if messages[0]["content"] == prompts.REWRITE_SYSTEM and self.rewrite:
            self.prompts.append(messages)
            yield self.rewrite
            return
        user = messages[-1]["content"]
        if "stallnow" in user:
            yield "卡"
            yield "住"
            self.unblock.wait()
            return
        if "slownow" in user:
            while True:
                time.sleep(0.2)
                self.produced += 1
                yield "慢。"  # a whole (short) sentence: released by the answer check at once
        for piece in super().stream(messages, max_tokens, prefix):
            if self.delay:
                time.sleep(self.delay)
            self.produced += 1
            yield piece
