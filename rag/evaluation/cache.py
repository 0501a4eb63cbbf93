"""LLM log-likelihoods on disk: re-running the MCQ report after changing only the decision rules costs
seconds, not the ~20 minutes of scoring. `rag eval --no-cache` bypasses it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

# Part of every key, with the generator's class, backend and model id and the whole prompt: a score
# is reused only for the same model reading the same text; bump it when the scoring itself changes.
SCORE_CACHE_VERSION = 1


class ScoreCache:
    """Log-likelihoods by (model, prompt, continuations), appended to a JSON Lines file."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fresh: set[str] = set()
        self.data: dict[str, list] = {}
        self.hits = self.misses = self.repeats = 0  # hits: from disk; repeats: same call earlier in this run
        if path and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.data[rec["k"]] = rec["v"]
                except (ValueError, KeyError):
                    continue  # a torn last line from an interrupted run

    def stats(self) -> dict:
        return {"from_disk": self.hits, "scored": self.misses, "repeated": self.repeats}

    def score(self, gen, messages: list[dict], prefix: str, continuations: Sequence[str]) -> list[tuple[float, int]]:
        key = hashlib.sha256(json.dumps(
            [SCORE_CACHE_VERSION, type(gen).__name__, getattr(gen, "backend", ""), getattr(gen, "model_id", ""),
             messages, prefix, list(continuations)], ensure_ascii=False).encode()).hexdigest()
        if key in self.data:
            if key in self._fresh:
                self.repeats += 1
            else:
                self.hits += 1
            return [tuple(x) for x in self.data[key]]
        self.misses += 1
        result = [(float(s), int(n)) for s, n in gen.score(messages, prefix, continuations)]
        self.data[key] = result
        self._fresh.add(key)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"k": key, "v": result}) + "\n")
        return result
