"""Deterministic stand-ins for the real models, chosen by spec string like any model.

`--embedder fake` / `RAG_EMBEDDER=fake`: hashed character bigrams (similar strings, similar vectors).
`--generator fake`: answers by restating the quoted or first passage sentence, cited; "translates" an
English question into the Chinese glossary equivalents of its terms (rag.translate).
`--generator fake:reply=<text>`: always answers <text>.
`--generator fake:delay=0.05,rewrite=<text>`: the paced, misbehaving-on-cue ScriptedGenerator (server tests, soak).
They need no model package, so `RAG_EMBEDDER=fake RAG_GENERATOR=fake rag ask …` runs anywhere in seconds.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterator, Sequence

import numpy as np

from . import prompts


class FakeEmbedder:
    """Hashed character-bigram vectors: similar strings get similar vectors, no model needed."""

    def __init__(self, dim: int = 64, model_id: str = "fake"):
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

    model_id = "fake"
    backend = "fake"
    links_passages = False  # set True to be offered passages (rag.generators.linking) and record them

    def __init__(self, reply: str | None = None):
        self.reply = reply
        self.prompts: list[list[dict]] = []
        self.prefixes: list[str] = []
        self.passages: list = []  # what each call was allowed to link (chunk_kv on)

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "",
               passages: Sequence = ()) -> Iterator[str]:
        self.prompts.append(messages)
        self.prefixes.append(prefix)
        self.passages.append(tuple(passages))
        text = self.reply
        if text is None and messages[0]["content"] == prompts.TRANSLATE_SYSTEM:
            text = _glossary_translation(messages[-1]["content"])
        elif text is None:
            user = messages[-1]["content"]
            m = re.search(r"\[1\][^\n]*\n([^。\n]{4,80})", user)
            n = 1
            if prefix:  # after the system-written quote: conclude by restating the quoted sentence
                m = re.search(r"[“。…]([^。…”\n]{4,80})", prefix) or m  # a quote may hold two sentences
                cited = re.search(r"\[(\d+)\]", prefix)  # (a doc2query prefix cites nothing)
                n = int(cited.group(1)) if cited else 1
            text = (m.group(1).strip() + f" [{n}]。") if m else "资料中没有相关内容。"
        for i in range(0, len(text), 3):
            yield text[i:i + 3]

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str],
              passages: Sequence = ()) -> list[tuple[float, int]]:
        context = messages[-1]["content"]
        out = []
        for c in continuations:
            grams = {c[i:i + 2] for i in range(len(c) - 1)} or {c}
            hit = sum(1 for g in grams if g in context) / len(grams)
            out.append((float(np.log(hit + 1e-3)), max(1, len(c) // 2)))
        return out


def _glossary_translation(question: str) -> str:
    """The fake's "translation" of an English question: the Chinese equivalents the glossary gives its terms."""
    from .lexical import glossary_matches

    zh = [o for _, others in glossary_matches(question) for o in others if re.search(r"[\u4e00-\u9fff]", o)]
    return " ".join(dict.fromkeys(zh))


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

    def stream(self, messages, max_tokens=256, prefix="", passages=()):
        import time

        if messages[0]["content"] == prompts.REWRITE_SYSTEM and self.rewrite:
            self.prompts.append(messages)
            yield self.rewrite
            return
        if messages[0]["content"] == prompts.TRANSLATE_SYSTEM:  # the cues act on the answer, not the search
            yield from super().stream(messages, max_tokens, prefix)
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


# ---------------------------------------------------------------- spec strings

PREFIX = "fake"


def is_fake(spec: str) -> bool:
    return spec == PREFIX or spec.startswith(PREFIX + ":")


def _options(spec: str) -> dict[str, str]:
    """'fake:a=1,b=2' -> {'a': '1', 'b': '2'}; 'reply=' takes the rest of the spec (it may hold commas)."""
    from .errors import SettingsError

    rest = spec[len(PREFIX) + 1:] if spec.startswith(PREFIX + ":") else ""
    out: dict[str, str] = {}
    while rest:
        if rest.startswith("reply="):
            out["reply"] = rest[len("reply="):]
            break
        item, _, rest = rest.partition(",")
        key, eq, value = item.partition("=")
        if not eq:
            raise SettingsError(f"fake model spec '{spec}': expected key=value, got '{item}'")
        out[key.strip()] = value
    return out


def fake_embedder(spec: str = PREFIX) -> FakeEmbedder:
    from .errors import SettingsError

    opts = _options(spec)
    unknown = set(opts) - {"dim"}
    if unknown:
        raise SettingsError(f"fake embedder spec '{spec}': unknown option(s) {', '.join(sorted(unknown))} (dim)")
    try:
        dim = int(opts.get("dim", 64))
    except ValueError:
        raise SettingsError(f"fake embedder spec '{spec}': dim must be a whole number") from None
    return FakeEmbedder(dim=dim, model_id=spec)


def fake_generator(spec: str = PREFIX) -> FakeGenerator:
    from .errors import SettingsError

    opts = _options(spec)
    unknown = set(opts) - {"reply", "delay", "rewrite"}
    if unknown:
        raise SettingsError(f"fake generator spec '{spec}': unknown option(s) {', '.join(sorted(unknown))} "
                            "(reply, delay, rewrite)")
    if "delay" in opts or "rewrite" in opts:
        try:
            delay = float(opts.get("delay", 0))
        except ValueError:
            raise SettingsError(f"fake generator spec '{spec}': delay must be a number of seconds") from None
        gen = ScriptedGenerator(delay=delay, rewrite=opts.get("rewrite"))
    else:
        gen = FakeGenerator(opts.get("reply"))
    gen.model_id = spec
    return gen
