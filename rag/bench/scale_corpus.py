"""Synthetic Chinese corpora for `rag bench scale`: the real notes' sentences recombined.

rag.loaders cleans the seed files; each synthetic Q&A unit is a question sentence as its heading and
2-6 random sentences as its answer, so word and bigram statistics stay those of the notes. With ~1k
seed sentences the vocabulary does not grow with the corpus: every term's posting list grows linearly
with N, which is the hard case for query latency. Files hold 100 units each.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from ..errors import RagError

UNITS_PER_FILE = 100
_SENTENCE = re.compile(r"[^。！？；!?\n]+[。！？；!?]?")


def seed_sentences(corpus_dir: Path) -> tuple[list[str], list[str]]:
    """(question-like sentences, all sentences) of the seed notes, cleaned by the product's loader."""
    from ..corpus import scan_sources
    from ..loaders import load_file

    sents: list[str] = []
    for sf in scan_sources([corpus_dir]):
        text = load_file(sf.path, sf.source).text
        for s in _SENTENCE.findall(text):
            s = s.strip(" \t#*>-0123456789.、()（）")
            if len(re.findall(r"[\u4e00-\u9fff]", s)) >= 4:
                sents.append(s)
    sents = list(dict.fromkeys(sents))
    questions = [s for s in sents if s.endswith(("？", "?")) and len(s) <= 60]
    if not sents or not questions:
        raise RagError(f"no usable sentences in {corpus_dir}")
    return questions, sents


def synth_file(questions: list[str], sents: list[str], seed: int, units: int = UNITS_PER_FILE) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for j in range(units):
        q = questions[rng.integers(len(questions))]
        body = "".join(sents[i] for i in rng.integers(len(sents), size=int(rng.integers(2, 7))))
        out.append(f"{j + 1}. {q}\n{body}\n")
    return "\n".join(out)


def make_corpus(corpus_dir: Path, seed_dir: Path, n_chunks: int) -> Path:
    """Write n_chunks / UNITS_PER_FILE files (deterministic; kept when already complete)."""
    marker = corpus_dir / ".complete"
    files = max(1, n_chunks // UNITS_PER_FILE)
    if marker.exists() and marker.read_text().strip() == str(files):
        return corpus_dir
    shutil.rmtree(corpus_dir, ignore_errors=True)
    questions, sents = seed_sentences(seed_dir)
    for i in range(files):
        sub = corpus_dir / f"part{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"notes{i:06d}.md").write_text(synth_file(questions, sents, seed=i), encoding="utf-8")
    marker.write_text(str(files))
    return corpus_dir
