"""Check every answer sentence against the evidence it cites; drop or replace what it does not support.

A 1.5B reader quotes "梯度爆炸不如梯度消失出现的机会多" and concludes "梯度爆炸比梯度消失更常见" in
the next sentence. So each sentence of the answer is held against the evidence sentence it is closest
to within the passages it cites:
  1. cheap checks first: character-bigram support (how much of the claim the evidence contains),
     negation parity (不/没/无/非/未/不如/not…) and comparative direction (更多 vs 更少, more vs less);
  2. a polarity/direction mismatch is a contradiction; where support is merely low, the local
     model's likelihood of "是" vs "否" to "does the evidence support this claim?" decides;
  3. a contradicting sentence is replaced by the evidence sentence it claimed (quoted and cited);
     an unsupported one is removed; the reader is told how many;
  4. a decimal constant that neither the evidence nor the question states ("SELU 的 λ 约为 1.0507"
     from a note that only names SELU) is unsupported whatever else the sentence says;
  5. so is a Chinese sentence made mostly of words that neither the evidence nor the question contains
     (NOVEL): the 1.5B judge says "是" to a paragraph on gradient clipping written beside evidence about
     non-linearity, so a claim must at least be built from what the reader was given.
Without a model to ask (scorer=None), unsure means unsupported: the safe direction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .citations import CITATION, numbers_in, support
from .evidence import Evidence, sentences
from .prompts import is_chinese

# Words that contain a negation character but do not negate ("不同", "无论", "非常"...).
_NOT_NEGATION = re.compile(r"不同|不断|不仅|不但|不论|不管|不过|不少|不一定|无论|非常|除非|无关紧要|并且|未来|毫无疑问")
_NEGATION = re.compile(r"并非|不如|不|没|无|非|未|否|\bnot\b|n't\b|\bno\b|\bnever\b|\bcannot\b|\bwithout\b", re.I)
# Comparative direction: +1 for "more/larger/...", -1 for the opposite; "不如" reverses a comparison.
_UP = re.compile(r"更多|较多|越多|更大|较大|越大|更高|较高|越高|更快|较快|更常见|更容易|增加|增大|上升|变大|"
                 r"\bmore\b|\blarger\b|\bhigher\b|\bfaster\b|\bincreases?\b|\bbigger\b", re.I)
_DOWN = re.compile(r"更少|较少|越少|更小|较小|越小|更低|较低|更慢|较慢|更罕见|更难|减少|减小|下降|变小|少见|不如|"
                   r"\bless\b|\bfewer\b|\bsmaller\b|\blower\b|\bslower\b|\bdecreases?\b", re.I)
_SIDE_STOP = re.compile(r"[，,。？?！!；;：:、（）()\s]|呢|吗|啊")
SUPPORTED = 0.5  # bigram share at or above which a claim with matching polarity needs no model
UNSUPPORTED = 0.2  # below this (and no model to ask) a claim is removed
JUDGE_MARGIN = 0.0  # log P(是) - log P(否) above which the model's "supported" is accepted
MIN_CLAIM_CHARS = 6
# Share of a Chinese claim's character bigrams (within runs of letters: punctuation is not content) found in
# the evidence and the question together, below which it is unsupported. Set on the tuning answers
# (eval/answers_tune.jsonl; every Chinese sentence the checks kept in the run of eval/results/answers_tune.md):
# the two lowest were a wrong answer's claim (0.32) and a near-topic answer's loop (0.33); the lowest of a
# right answer was 0.40 (its English question's translation not counted), the next 0.56.
NOVEL = 0.35
# Integers are left alone: they are often worked out from the question's numbers (an output size).
_CONSTANT = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")


def invented_constants(claim: str, evidence: list[Evidence], question: str = "") -> list[str]:
    """Decimal numbers in the claim that no evidence sentence and not the question contain."""
    given = "\n".join([question, *(e.text for e in evidence)])
    return [c for c in _CONSTANT.findall(claim) if c not in given]


def novel(claim: str, evidence: list[Evidence], question: str = "") -> bool:
    """A Chinese claim mostly made of words that neither the evidence nor the question contains. (An
    English claim about Chinese evidence shares few bigrams with it by nature: not judged this way.)"""
    if not is_chinese(claim):
        return False
    mine = _content_bigrams(claim)
    given = _content_bigrams("\n".join([question, *(e.text for e in evidence)]))
    return bool(mine) and len(mine & given) / len(mine) < NOVEL


def _content_bigrams(text: str) -> set[str]:
    return {run[i:i + 2] for run in re.split(r"\W+", CITATION.sub("", text.lower())) for i in range(len(run) - 1)}


def negations(text: str) -> int:
    return len(_NEGATION.findall(_NOT_NEGATION.sub("", text)))


def direction(text: str) -> int:
    return (1 if _UP.search(text) else 0) - (1 if _DOWN.search(text) else 0)


def polarity_conflict(claim: str, evidence: str) -> bool:
    """The claim negates what the evidence asserts (or the reverse), or compares the other way round."""
    if negations(claim) % 2 != negations(evidence) % 2:
        return True
    dc, de = direction(claim), direction(evidence)
    return dc != 0 and de != 0 and dc != de


def either_or(question: str) -> tuple[str, str] | None:
    """The two alternatives of an "X还是Y" question ("求平均还是求和" -> 平均, 求和), or None.

    Chinese has no spaces: the sides run from 还是 to the nearest punctuation. Parallel sides share a
    suffix (越低越好/越高越好, 大一点好/小一点好): what differs before it is the choice, kept two
    characters long. Otherwise the jieba words next to 还是 are (一阶还是二阶方法 -> 一阶, 二阶)."""
    if question.count("还是") != 1:
        return None
    left, right = question.split("还是")
    x, y = _SIDE_STOP.split(left.strip())[-1], _SIDE_STOP.split(right.strip(), maxsplit=1)[0]
    if not x or not y:
        return None
    n = 0
    while n < min(len(x), len(y)) - 1 and x[-1 - n] == y[-1 - n]:
        n += 1
    if n:
        xc, yc = x[:-n], y[:-n]
        xc = xc[-len(yc):]
        if min(len(xc), len(yc)) < 2:  # 大/小 -> 大一/小一
            xc, yc = xc + x[-n], yc + y[-n]
    else:
        import jieba

        xs, ys = [t for t in jieba.cut(x) if t.strip()], [t for t in jieba.cut(y) if t.strip()]
        xc = xs[-1] if len(xs[-1]) > 1 or len(xs) < 2 else xs[-2] + xs[-1]
        yc = ys[0] if len(ys[0]) > 1 or len(ys) < 2 else ys[0] + ys[1]
    xc, yc = xc.strip().lower(), yc.strip().lower()
    if len(xc) < 2 or len(yc) < 2 or xc in yc or yc in xc:
        return None
    return xc, yc


def picks_the_other(claim: str, evidence: str, alternatives: tuple[str, str] | None) -> bool:
    """The claim picks one alternative of the question while the evidence, unnegated, names only the other."""
    if not alternatives:
        return False
    c, e = claim.lower(), evidence.lower()
    for mine, other in (alternatives, alternatives[::-1]):
        if mine in c and other not in c and other in e and mine not in e and not negations(evidence):
            return True
    return False


@dataclass
class Verdict:
    claim: str
    status: str  # "ok" | "quote" | "short" | "supported-by-model" | "unsupported" | "contradiction"
    evidence: Evidence | None = None
    support: float = 0.0
    judge: float | None = None


@dataclass
class VerifiedAnswer:
    text: str
    verdicts: list[Verdict] = field(default_factory=list)
    requoted: tuple[int, int] | None = None  # (passage quoted first, passage quoted instead): see requote()

    @property
    def removed(self) -> int:
        return sum(v.status == "unsupported" for v in self.verdicts)

    @property
    def replaced(self) -> int:
        return sum(v.status == "contradiction" for v in self.verdicts)

    def note(self) -> str:
        parts = []
        if self.removed:
            parts.append(f"删除了 {self.removed} 句资料不支持的内容 (removed {self.removed} unsupported sentence"
                         f"{'s' if self.removed > 1 else ''})")
        if self.replaced:
            parts.append(f"把 {self.replaced} 句与资料矛盾的内容换成了资料原文 (replaced {self.replaced} sentence"
                         f"{'s' if self.replaced > 1 else ''} that contradicted the cited evidence)")
        if self.requoted:
            a, b = self.requoted
            parts.append(f"引文由 [{a}] 换成了结论所依据的 [{b}] (quoted [{b}], the passage the conclusion rests on, "
                         f"instead of [{a}])")
        return "；".join(parts)


def _bare(text: str) -> str:
    return CITATION.sub("", text).strip()


def _candidates(claim: str, evidence: list[Evidence]) -> list[Evidence]:
    cited = set(numbers_in(claim))
    pool = [e for e in evidence if e.n in cited] if cited else []
    return pool or evidence


def cheap_verdict(claim: str, evidence: list[Evidence], quotes: set[str] = frozenset(),
                  alternatives: tuple[str, str] | None = None, question: str = "") -> Verdict:
    """What the cheap checks say: "ok", "quote", "short", "unsupported" (an invented constant), or the
    suspect statuses "unsure"/"conflict". `alternatives`: the question's "X还是Y" (either_or); a claim
    that picks the one the evidence does not name is a conflict."""
    bare = _bare(claim)
    core = bare.strip("“”\"'「」 ").rstrip("。.!！?？")
    if any(core and core in q for q in quotes) or re.match(r"^依据\[\d+\]\s*[:：]", bare):
        return Verdict(claim, "quote")
    if len(re.sub(r"\W", "", bare)) < MIN_CLAIM_CHARS or not evidence:
        return Verdict(claim, "short")
    pool = _candidates(claim, evidence)
    scored = sorted(((support(bare, e.text), e) for e in pool), key=lambda x: -x[0])
    best_s, best = scored[0]
    if invented_constants(bare, evidence, question):
        return Verdict(claim, "unsupported", best, best_s)
    if picks_the_other(bare, best.text, alternatives):
        return Verdict(claim, "conflict", best, best_s)
    # About the same thing, opposite sense, and no other evidence sentence, about as close to the claim and
    # itself negated or comparative, agrees with it:
    # "测试时不用 dropout" against "dropout只在训练的时候用" alone is a false alarm when the evidence also
    # holds "只会影响训练过程,而不会影响测试过程" (found by the real-model test).
    if best_s >= UNSUPPORTED and polarity_conflict(bare, best.text) and not any(
            e is not best and support(bare, e.text) >= max(UNSUPPORTED, 0.8 * best_s)
            and (negations(e.text) or direction(e.text)) and not polarity_conflict(bare, e.text)
            for e in evidence):
        return Verdict(claim, "conflict", best, best_s)
    if novel(bare, evidence, question):  # (after the conflicts: a contradiction is replaced, not only removed)
        return Verdict(claim, "unsupported", best, best_s)
    if best_s >= SUPPORTED:
        return Verdict(claim, "ok", best, best_s)
    return Verdict(claim, "unsure", best, best_s)


SHOWABLE = ("ok", "quote", "short")
KEPT = SHOWABLE + ("supported-by-model",)


def releasable(text: str, shown: int, evidence: list[Evidence], quotes: set[str] = frozenset(),
               passages: int | None = None, alternatives: tuple[str, str] | None = None,
               question: str = "") -> tuple[int, bool]:
    """While an answer streams: how far it may be shown (the end of the last complete sentence the
    cheap checks accept), and whether a suspect sentence now holds the rest back. A sentence citing a
    passage number that was not retrieved (1..`passages`) is held too: the citation check re-points it."""
    from .citations import numbers_in
    from .evidence import split_sentences

    pending = text[shown:]
    upto = 0
    for s, e in split_sentences(pending)[:-1]:  # the last sentence may still be growing
        sentence = pending[s:e]
        bad_number = passages is not None and any(not 1 <= n <= passages for n in numbers_in(sentence))
        if bad_number or cheap_verdict(sentence, evidence, quotes, alternatives, question).status not in SHOWABLE:
            return shown + upto, True
        upto = e
    return shown + upto, False


def judge_support(scorer, evidence: str, claim: str) -> float:
    """log P(是) - log P(否) that the evidence supports the claim (the local model, one short prompt)."""
    from . import prompts

    (yes, _), (no, _) = scorer(prompts.support_messages(evidence, claim), prompts.SUPPORT_PREFIX,
                               [prompts.SUPPORT_YES, prompts.SUPPORT_NO])
    return yes - no


def resolve(v: Verdict, scorer=None) -> Verdict:
    """Settle a suspect verdict. A polarity or direction flip against the evidence is a contradiction
    whatever the model says: asked "does the evidence support it?", the 1.5B reader said "是" to
    "梯度爆炸比梯度消失更常见" against "梯度爆炸不如梯度消失出现的机会多". A false alarm costs little: the
    evidence sentence itself takes the claim's place. The model only settles low-overlap claims."""
    if v.status == "conflict":
        v.status = "contradiction"
    elif v.status == "unsure":
        if scorer is not None:
            v.judge = judge_support(scorer, v.evidence.text, _bare(v.claim))
        v.status = "supported-by-model" if v.judge is not None and v.judge > JUDGE_MARGIN else "unsupported"
    return v


def replacement(v: Verdict) -> str:
    """What stands where a contradicting sentence stood: the evidence it claimed, quoted and cited."""
    e = v.evidence
    return f"资料原文：“{e.text.strip()}” [{e.n}]"


def verify_answer(text: str, evidence: list[Evidence], scorer=None, quotes: set[str] = frozenset(),
                  alternatives: tuple[str, str] | None = None, question: str = "") -> VerifiedAnswer:
    pieces, verdicts = [], []
    for claim in sentences(text):
        v = resolve(cheap_verdict(claim, evidence, quotes, alternatives, question), scorer)
        verdicts.append(v)
        if v.status == "unsupported":
            continue
        if v.status == "contradiction" and v.evidence.text.strip().rstrip("。.") in quotes:
            continue  # the evidence it contradicts is already quoted above it: drop, do not repeat
        pieces.append(replacement(v) if v.status == "contradiction" else claim)
    # Never replace a quote twice: two contradicting sentences may claim the same evidence.
    out: list[str] = []
    for p in pieces:
        if p not in out:
            out.append(p)
    return VerifiedAnswer("\n".join(_join(out)), verdicts)


def requote(verified: VerifiedAnswer, quoted: list[Evidence], evidence: list[Evidence]) -> Evidence | None:
    """The evidence sentence to quote instead of `quoted` when the kept conclusion rests on another passage.

    The system picks the quote by word overlap before the model writes; the model, reading all the evidence,
    sometimes concludes from another passage and cites it ("依据[1]：“…” 所以，… [3]"). The answer then cites
    a passage nothing in it rests on. When no kept sentence cites the quoted passage, the sentence of the
    first one's cited passages that supports it best replaces the quote, if it supports it better than the
    quote does. The answer then quotes and cites one passage."""
    if not quoted or not verified.verdicts or verified.verdicts[0].status not in KEPT:
        return None
    first = verified.verdicts[0]
    cited = set(numbers_in(first.claim))
    kept = {n for v in verified.verdicts if v.status in KEPT for n in numbers_in(v.claim)}
    pool = [e for e in evidence if e.n in cited]
    if not pool or quoted[0].n in kept:
        return None
    claim = _bare(first.claim)
    best = max(pool, key=lambda e: support(claim, e.text))
    if support(claim, best.text) <= max(support(claim, q.text) for q in quoted):
        return None
    verified.requoted = (quoted[0].n, best.n)
    return best


def _join(pieces: list[str]) -> list[str]:
    """Sentences back into lines: Chinese sentences run on, a quote line stands alone."""
    lines: list[str] = []
    for p in pieces:
        if lines and not lines[-1].startswith("依据[") and not p.startswith(("依据[", "资料原文")):
            lines[-1] += p if re.match(r"[\u4e00-\u9fff“]", p) else " " + p
        else:
            lines.append(p)
    return lines


_CORRECTION_WORDING = {  # what the citation check changed, for the page (zh) and the terminal (en)
    "zh": ("删除了指向不存在资料的引用 {}", "更正了引用 {}", "为未标注来源的句子补充了引用 {}", "", "、"),
    "en": ("removed citations of passages that were not retrieved: {}",
           "re-pointed citations the cited passage did not support: {}", "added citations to uncited sentences: {}",
           ", ", ", "),
}


def correction_notes(answer, lang: str = "zh") -> list[str]:
    """Plain-text notes on what checking changed in `answer` (a rag.assistant.Answer): the verification's
    own note, then removed, re-pointed and added citations. Empty when nothing was changed."""
    removed, replaced, attached, sep, pair_sep = _CORRECTION_WORDING[lang]
    verified = answer.verified.note() if getattr(answer, "verified", None) else ""
    notes = [verified] if verified else []
    ch = answer.checked
    if ch is None or not ch.corrected:
        return notes
    if ch.removed:
        notes.append(removed.format(sep.join(f"[{n}]" for n in ch.removed)))
    if ch.replaced:
        notes.append(replaced.format(pair_sep.join(f"[{a}]→[{b}]" for a, b in ch.replaced)))
    if ch.attached:
        notes.append(attached.format(sep.join(f"[{n}]" for n in ch.attached)))
    return notes
