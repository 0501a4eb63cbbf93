"""Eval sets: where they live, how a JSON Lines file is read, and which passage counts as the gold one.

A gold is (source file, question heading, text the passage must hold); an item names one in
`source` / `gold_heading` / `gold_contains` and may add more in `alt_golds` (retrieval and answer sets)
or `alt_sources` (blind rubric sets).
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import RagError

Gold = tuple[str, "str | None", "str | None"]  # (source, gold_heading, gold_contains)
EVIDENCE_MATCH = 0.6  # share of the gold text's bigrams one evidence sentence must hold

_MARKUP = re.compile(r"[\s*`#]+")
_MARKUP_AND_QUOTES = re.compile(r"[\s*`#“”\"'「」]+")


def data_dir() -> Path:
    env = os.environ.get("RAG_EVAL_DATA")
    if env:
        return Path(env)
    for d in (Path("eval"), Path(__file__).resolve().parents[2] / "eval"):
        if (d / "mcq.jsonl").exists() or (d / "retrieval.jsonl").exists():
            return d
    return Path("eval")


def load_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines eval set; a bad row is reported by its line number, not as a trace."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RagError(f"eval set not found: {path} (run from the repository root or set RAG_EVAL_DATA)") from None
    except UnicodeDecodeError as e:
        raise RagError(f"{path}: not UTF-8 (invalid byte at offset {e.start}); re-save it as UTF-8") from None
    rows, seen = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise RagError(f"{path}:{n}: invalid JSON ({e})") from None
        if not isinstance(row, dict):
            raise RagError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        if "id" in row:
            if row["id"] in seen:
                raise RagError(f"{path}:{n}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
            seen[row["id"]] = n
        rows.append(row)
    return rows


def load_set(name: str) -> list[dict]:
    """An eval set of the data directory by file name ("retrieval.jsonl")."""
    return load_jsonl(data_dir() / name)


def spread(items: list[dict], every: int | None = None, limit: int | None = None) -> list[dict]:
    """Every n-th item (a spread subset), then the first `limit` of those (a quick check)."""
    if every:
        items = items[::every]
    return items[:limit] if limit else items


def each(items: Sequence, progress=None, desc: str = "") -> Iterator:
    """The items, with a bar from a tqdm-like factory (the Assistant's `progress`; None: no bar)."""
    bar = progress(total=len(items), desc=desc) if progress else None
    try:
        for it in items:
            t0 = time.perf_counter()
            yield it
            if bar is not None:
                bar.set_postfix_str(f"{time.perf_counter() - t0:.2f}s/item", refresh=False)
                bar.update()
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------- gold matching

def normalize(text: str | None, quotes: bool = False) -> str:
    """Case, width, whitespace and Markdown marks folded away; `quotes`: quotation marks too (rubric
    facts are written without the quotes an answer may put around a term)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return (_MARKUP_AND_QUOTES if quotes else _MARKUP).sub("", text)


def heading_key(heading: str | None) -> str:
    """The question part of a chunk heading: section prefix ("CNN问题 · ") and labels ("[BN] ") dropped."""
    h = (heading or "").split(" · ")[-1]
    h = re.sub(r"^\s*(?:\[[^\]]*\]\s*)+", "", h)
    return normalize(h).strip("?？。.:：!！")


def heading_matches(chunk_heading: str, gold_heading: str | None) -> bool:
    a, b = heading_key(chunk_heading), heading_key(gold_heading)
    if not b:
        return False
    # Stray markup before the question number ("W 什么是多任务学习？") survives in some headings.
    return a == b or (len(b) >= 6 and a.endswith(b))


def golds_of(item: dict) -> list[Gold]:
    golds = [(item.get("source"), item.get("gold_heading"), item.get("gold_contains"))]
    for g in (item.get("alt_sources") or []) + (item.get("alt_golds") or []):
        golds.append((g.get("source"), g.get("gold_heading"), g.get("gold_contains")))
    return [g for g in golds if g[0]]


def covered_of(item: dict) -> bool:
    """Blind sets say `covered`, the answers set `in_corpus`, the retrieval set kind "out_of_corpus"."""
    for key in ("covered", "in_corpus"):
        if key in item:
            return bool(item[key])
    return item.get("kind") != "out_of_corpus"


def is_gold(chunk, golds: Sequence[Gold]) -> bool:
    """A chunk from a gold source that holds the gold text or sits under the gold question."""
    for source, heading, contains in golds:
        if chunk.source != source:
            continue
        if contains and normalize(contains) in normalize(chunk.text):
            return True
        if heading and heading_matches(chunk.heading, heading):
            return True
    return False


def first_gold_rank(chunks: Iterable, golds: Sequence[Gold]) -> int | None:
    for rank, c in enumerate(chunks, 1):
        if is_gold(c, golds):
            return rank
    return None


def evidence_has_gold(evidence, golds: Sequence[Gold]) -> bool:
    """Some selected sentence holds (most of) a gold text from a gold source."""
    from ..lexical import bigrams

    for source, _, contains in golds:
        if not contains:
            continue
        want = set(bigrams(contains))
        for e in evidence:
            if e.source == source and want and len(want & set(bigrams(e.text))) / len(want) >= EVIDENCE_MATCH:
                return True
            if e.source == source and normalize(contains, quotes=True) in normalize(e.text, quotes=True):
                return True
    return False
