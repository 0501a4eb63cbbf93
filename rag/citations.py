"""Citation checking: every [n] in an answer must point at a retrieved passage.

After generation, citations of passages that were not retrieved are removed, and answer sentences
without a citation get one where a retrieved passage clearly supports them (character-bigram
containment, which works for Chinese without a tokenizer). What is shown as a source always comes
from retrieval metadata, never from text the model or a document wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\]")
# Citation-looking text that is not a bare number list is never a citation, and is removed so it cannot
# pass for one: "[source: hr.pdf p.4]", "【来源：secret.txt】", "[secret.txt]" (copied from a planted document).
_OPEN, _CLOSE = r"\[【［〔", r"\]】］〕"
FAKE_SOURCE = re.compile(
    rf"[{_OPEN}]\s*(?:sources?|来源|出处|ref|引用|参考|资料)\s*[:：][^{_CLOSE}\n]*[{_CLOSE}]"
    rf"|[{_OPEN}][^{_CLOSE}\n]{{0,80}}?\.(?:pdf|txt|md|markdown|html?|docx?)\b[^{_CLOSE}\n]{{0,40}}[{_CLOSE}]",
    re.IGNORECASE)


def without_fake_sources(text: str) -> str:
    """`text` as shown or quoted: source markers a document wrote into itself are dropped, so the only
    source beside a sentence is the one retrieval attached."""
    return FAKE_SOURCE.sub("", text)


_SENTENCE = re.compile(r"[^。！？!?\n]+(?:[。！？!?]+|\n|$)|\n")
# "…过程。 [1]": a citation written after the full stop belongs to the sentence before it.
_CITED_AFTER_STOP = re.compile(r"([。！？!?]+)[ \t]*((?:\[\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\][ \t]*)+)")
SUPPORT_THRESHOLD = 0.35
UNSUPPORTED = 0.15  # a cited passage sharing less than this with its sentence does not support it
CLEARLY_BETTER = 0.3  # ...nor does one that another passage out-supports by this margin
MIN_SENTENCE_CHARS = 8


@dataclass
class CheckedAnswer:
    text: str
    cited: list[int]  # 1-based passage numbers cited in the final text, in order of first use
    removed: list[int] = field(default_factory=list)  # invalid numbers the model wrote
    attached: list[int] = field(default_factory=list)  # numbers added post hoc
    replaced: list[tuple[int, int]] = field(default_factory=list)  # (cited, better-supported) swaps

    @property
    def corrected(self) -> bool:
        return bool(self.removed or self.attached or self.replaced)


def _bigrams(text: str) -> set[str]:
    s = re.sub(r"\s+", "", CITATION.sub("", text.lower()))
    return {s[i:i + 2] for i in range(len(s) - 1)}


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's character bigrams that occur in the passage."""
    sb = _bigrams(sentence)
    if not sb:
        return 0.0
    return len(sb & _bigrams(passage)) / len(sb)


def numbers_in(text: str) -> list[int]:
    out: list[int] = []
    for m in CITATION.finditer(text):
        for n in re.split(r"\s*[,，、]\s*", m.group(1)):
            if n.isdigit() and int(n) not in out:
                out.append(int(n))
    return out


def check_citations(answer: str, passages: list[str], threshold: float = SUPPORT_THRESHOLD) -> CheckedAnswer:
    n_passages = len(passages)
    removed: list[int] = []

    def keep_valid(m: re.Match) -> str:
        nums = [int(n) for n in re.split(r"\s*[,，、]\s*", m.group(1))]
        good = [n for n in nums if 1 <= n <= n_passages]
        removed.extend(n for n in nums if n not in good)
        return "".join(f"[{n}]" for n in dict.fromkeys(good))

    text = without_fake_sources(answer)
    text = CITATION.sub(keep_valid, text)
    text = _CITED_AFTER_STOP.sub(lambda m: " " + m.group(2).strip() + m.group(1), text)
    attached: list[int] = []
    replaced: list[tuple[int, int]] = []
    pieces = []
    for m in _SENTENCE.finditer(text):
        sent = m.group(0)
        body = sent.rstrip("\n")
        if len(CITATION.sub("", body).strip()) < MIN_SENTENCE_CHARS or not passages:
            pieces.append(sent)
            continue
        scores = [support(body, p) for p in passages]
        best = max(range(n_passages), key=lambda i: scores[i])
        cited = numbers_in(body)
        if cited:
            # A small model often cites a passage number that does not hold the claim; when the cited
            # passages share (almost) nothing with the sentence and another clearly does, swap it.
            cited_best = max(scores[n - 1] for n in cited)
            if scores[best] >= threshold and (cited_best < UNSUPPORTED or scores[best] - cited_best >= CLEARLY_BETTER):
                body = CITATION.sub("", body).rstrip()
                replaced.extend((n, best + 1) for n in cited)
            else:
                pieces.append(sent)
                continue
        elif scores[best] < threshold:
            pieces.append(sent)
            continue
        else:
            attached.append(best + 1)
        head = body.rstrip("。！？!?.；; ")
        body = f"{head.rstrip()} [{best + 1}]{body[len(head):].strip()}"
        pieces.append(body + sent[len(sent.rstrip("\n")):])
    final = "".join(pieces)
    return CheckedAnswer(final, numbers_in(final), sorted(set(removed)), attached, replaced)
