"""English questions, searched in the notes' language.

The notes are Chinese and no Chinese-English embedding model installs offline, so an English question
reaches a Chinese note only through the few terms the glossary knows: on the tuning sets the gold
passage was in the top 5 for 76-87% of English questions against 94-97% of Chinese ones. The local LLM
translates well enough for retrieval: the question is searched as "English question + its Chinese
translation" (one ~1 s generation, English and mostly-English questions only). Measured on the tuning sets
(`python eval/compare_translation.py`, eval/results/translation.md), against searching a keyword
rewrite of every question (which lost on Chinese paraphrases) and the translation alone.

The answer is still written for the question as asked, in English; only the search and the evidence
selection read the translation.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from . import prompts

MAX_CHARS = 200  # a translation longer than this is the model talking, not translating
CACHE_ITEMS = 256  # recent translations kept per process (a chat UI asks the same question again)
MIN_LATIN_WORDS = 2
# The eval sets' "mixed" convention. Mixed questions were measured too (eval/results/translation.md): hit@5
# unchanged, MRR@5 +0.01 to +0.06 on the three tuning sets, so they are translated as well.
LATIN_SHARE = 0.3
SAMPLE_CHUNKS = 200  # chunks read to tell whether the notes are Chinese
CHINESE_NOTES = 0.2  # share of CJK among the sampled chunks' letters above which the notes count as Chinese

_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def is_english(question: str) -> bool:
    """Mostly English: Latin letters are at least LATIN_SHARE of the letters, in at least two Latin words
    ("BN?" alone is a term, not a sentence). Chinese questions with a few English terms are searched as
    asked; those with many ("mixed": "BN 和 LN 在 batch size 很小的时候谁更稳") gain from the translation too."""
    return (len(_LATIN_WORD.findall(question)) >= MIN_LATIN_WORDS
            and 1.0 - chinese_share([question]) >= LATIN_SHARE)


def chinese_share(texts) -> float:
    """Share of CJK characters among the letters of `texts` (Latin letters and CJK characters)."""
    cjk = latin = 0
    for t in texts:
        cjk += len(_CJK.findall(t))
        latin += sum(1 for ch in t if ch.isascii() and ch.isalpha())
    return cjk / (cjk + latin) if cjk + latin else 0.0


def notes_are_chinese(chunks) -> bool:
    n = min(len(chunks), SAMPLE_CHUNKS)
    return n > 0 and chinese_share(chunks[i].text for i in range(n)) >= CHINESE_NOTES


def parse(raw: str) -> str | None:
    """The translation from the model's reply: its first line, which must be Chinese and short."""
    line = next((ln.strip() for ln in raw.strip().splitlines() if ln.strip()), "")
    line = line.strip("“”\"'「」 ")
    if not _CJK.search(line) or len(line) > MAX_CHARS:
        return None
    return line


def search_text(question: str, translation: str | None) -> str:
    """What is searched: the question's own words (its English terms still match the notes' English
    terms) and the translation's Chinese ones."""
    return f"{question} {translation}" if translation else question


class Translator:
    """Translates English questions with a generator; remembers recent ones."""

    def __init__(self, generator, max_tokens: int = 64):
        self.generator = generator
        self.max_tokens = max_tokens
        self._cache: OrderedDict[str, str | None] = OrderedDict()

    def __call__(self, question: str) -> str | None:
        if question in self._cache:
            self._cache.move_to_end(question)
            return self._cache[question]
        raw = ""
        for piece in self.generator.stream(prompts.translation_messages(question), max_tokens=self.max_tokens):
            raw += piece
            if "\n" in raw.strip() or len(raw) > MAX_CHARS:
                break  # one line is the translation; what follows is the model explaining itself
        out = parse(raw)
        self._cache[question] = out
        if len(self._cache) > CACHE_ITEMS:
            self._cache.popitem(last=False)
        return out
