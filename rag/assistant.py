"""The assistant: retrieve, decide whether the corpus covers the question, generate, check citations."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

from . import prompts
from .abstain import features, load_calibration, unknown_names, unseen_terms
from .chunking import ChunkerSettings
from .citations import CheckedAnswer, check_citations, numbers_in
from .config import Settings
from .evidence import MAX_PASSAGES, Evidence, best_score, passage_of, quotes, select_evidence
from .verify import KEPT, VerifiedAnswer, either_or, releasable, requote, verify_answer
from .errors import GenerationError, IndexMissing, RagError
from .corpus import scan_sources
from .generations import current_generation
from .index import BuildReport, LoadedIndex, build_index, check_embedder, load_index
from .retriever import Hit, Retrieval, Retriever, clean_query

HISTORY_TURNS = 3  # turns of conversation the follow-up rewriter reads (callers pass the whole history)
MIN_QUOTE = 1  # warm_chunk_kv's stand-in evidence: the prompt needs one group to put the chunk's heading in


@dataclass
class Answer:
    question: str
    query: str  # what was searched (the rewritten question in a conversation)
    text: str
    hits: list[Hit]
    abstained: bool
    checked: CheckedAnswer | None = None
    timings: dict = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    verified: VerifiedAnswer | None = None
    p_covered: float | None = None  # calibrated P(the evidence answers the question), when a fit exists
    unknown: list[str] = field(default_factory=list)  # names in the question no note mentions (declined)

    @property
    def sources(self) -> list[tuple[int, Hit]]:
        """(number, hit) for every passage the final answer cites (none when abstaining: the closest
        passages are in `hits`)."""
        if self.abstained or self.checked is None:
            return []
        return [(n, self.hits[n - 1]) for n in numbers_in(self.text) if 1 <= n <= len(self.hits)]

    def to_dict(self) -> dict:
        return {
            "question": self.question, "query": self.query, "answer": self.text, "abstained": self.abstained,
            "citations": [{"n": n, **h.to_dict()} for n, h in self.sources],
            "passages": [{"n": i + 1, **h.to_dict()} for i, h in enumerate(self.hits)],
            "evidence": [e.to_dict() for e in self.evidence],
            "p_covered": None if self.p_covered is None else round(self.p_covered, 4),
            "unknown_terms": self.unknown,
            "verification": self.verified.note() if self.verified else "",
            "removed_citations": self.checked.removed if self.checked else [],
            "attached_citations": self.checked.attached if self.checked else [],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass
class Event:
    # "retrieved" | "token" | "pending" (the model produced text that waits for its sentence to end or
    # for the check: no text, but proof of life for watchdogs and a point to cancel at) | "done"
    kind: str
    text: str = ""
    retrieval: Retrieval | None = None
    answer: Answer | None = None
    evidence: list[Evidence] = field(default_factory=list)  # with "retrieved": shown before any token


@dataclass
class _Turn:
    """One question on its way through ask(): what was retrieved and selected, and the clock."""
    question: str
    query: str
    retrieval: Retrieval
    evidence: list[Evidence]
    t0: float
    timings: dict
    passages: tuple = ()  # with chunk_kv on: the passages the model may link instead of reading
    said: list[Evidence] = field(default_factory=list)  # the sentences the answer opens by quoting
    asked: str = ""  # the stand-alone question (a follow-up rewritten), before any translation was added

    # Read for every streamed piece (releasable): computed once per question, not per token.
    @cached_property
    def quotes(self) -> set[str]:
        return {e.text.strip().rstrip("。.") for e in self.evidence}

    @cached_property
    def alternatives(self) -> tuple[str, str] | None:
        return either_or(self.question)


class Assistant:
    def __init__(self, settings: Settings, embedder=None, generator=None,
                 progress: Callable | None = None, warn: Callable[[str], None] = lambda m: None):
        self.settings = settings
        self._embedder = embedder
        self._generator = generator
        self.progress = progress
        self.warn = warn
        self._index: LoadedIndex | None = None
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None, progress: Callable | None = None,
                      warn: Callable[[str], None] = lambda m: None) -> "Assistant":
        """The one place settings become parts. The embedder and the generator load lazily from their spec
        strings (rag.embedders.load_embedder / rag.generators.load_generator; "fake" picks rag.fakes), so
        retrieval never waits for the LLM; the index is opened (or built) on first use."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub at run time: a missing model fails at once
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return cls(settings or Settings.from_env(), progress=progress, warn=warn)

    def derive(self, **changes) -> "Assistant":
        """Another assistant with some settings changed (another index, generator, answer style), sharing
        the loaded models whose spec did not change."""
        s = replace(self.settings, **changes)
        return Assistant(s, embedder=self._embedder if s.embedder == self.settings.embedder else None,
                         generator=self._generator if s.generator == self.settings.generator else None,
                         progress=self.progress, warn=self.warn)

    # -- lazily loaded parts
    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from .embedders import load_embedder

                self._embedder = load_embedder(self.settings.embedder, self.settings.cache_dir, self.progress)
            return self._embedder

    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                from .generators import load_generator

                s = self.settings
                self._generator = load_generator(s.generator, s.cache_dir, backend=s.backend, threads=s.threads,
                                                 progress=self.progress, passage_cache=s.cache_dir / "kv",
                                                 passage_cache_mb=s.chunk_kv_mb)
            return self._generator

    def build(self, paths: list[Path] | None = None, rebuild: bool = False) -> BuildReport:
        s = self.settings
        links: list[tuple[Path, str]] = []
        sources = scan_sources(paths or [s.corpus_dir], links)
        for path, reason in links:
            self.warn(f"skipped {path}: {reason}")
        report = build_index(
            sources, s.index_dir, s.embedder, lambda: self.embedder,
            ChunkerSettings(s.chunk_size, s.chunk_overlap), rebuild=rebuild, progress=self.progress, warn=self.warn,
            vector_request={"index": s.vector_index, "store": s.store, "milvus_uri": s.milvus_uri,
                            "nprobe": s.nprobe, "ef_search": s.ef_search})
        with self._lock:
            self._index = None
        return report

    def index(self) -> LoadedIndex:
        """The live index; reloaded when a rebuild switched generations; built on first use."""
        with self._lock:
            gen = current_generation(self.settings.index_dir)
            if gen is None:
                self.warn(f"no index at {self.settings.index_dir}: building it from {self.settings.corpus_dir}")
                self.build()
                gen = current_generation(self.settings.index_dir)
                if gen is None:
                    raise IndexMissing(f"no index at {self.settings.index_dir}")
            if self._index is None or self._index.path != gen:
                s = self.settings
                self._index = load_index(s.index_dir, s.embedder, {"nprobe": s.nprobe or None,
                                         "ef_search": s.ef_search or None, "milvus_uri": s.milvus_uri or None})
            return self._index

    def warm_chunk_kv(self, progress: Callable | None = None, chunks=None) -> tuple[int, int]:
        """With chunk_kv on and a llama.cpp model: build the KV caches of `chunks` (default: every indexed
        chunk) that are missing. `rag index` runs it, so a new document's chunks are ready before anyone
        asks; interrupting it keeps the caches already written. Returns (chunks seen, caches built)."""
        gen = self.generator
        if self.settings.chunk_kv != "on" or not getattr(gen, "links_passages", False):
            return 0, 0
        chunks = list(self.index().chunks if chunks is None else chunks)
        built = 0
        for i, chunk in enumerate(chunks):
            # The chunk as passage [1] of an evidence prompt: the opening before it is every question's.
            first = [Evidence(1, chunk.text[:MIN_QUOTE], chunk.source, chunk.line, chunk.start, chunk.start, 1.0)]
            messages = prompts.evidence_messages("", first, [Hit(chunk, 0.0)])
            built += gen.cache_passages(messages, [passage_of(chunk)])
            if progress:
                progress(i + 1, len(chunks))
        return len(chunks), built

    def linked_passages(self, hits: list[Hit]) -> tuple:
        """The passages the model may link instead of reading (chunk_kv on, a backend that links)."""
        if self.settings.chunk_kv == "on" and getattr(self.generator, "links_passages", False):
            return tuple(passage_of(h.chunk) for h in hits[:MAX_PASSAGES])
        return ()

    def retriever(self) -> Retriever:
        index = self.index()
        emb = self.embedder
        check_embedder(index.manifest, self.settings.embedder, emb.dim, getattr(emb, "fingerprint", None))
        return Retriever(index, emb, candidates=self.settings.candidates, rrf_k=self.settings.rrf_k)

    def search(self, query: str, k: int | None = None, mode: str = "hybrid") -> Retrieval:
        return self.retriever().search(query, k or self.settings.top_k, mode=mode)

    @cached_property
    def translator(self):
        from .translate import Translator

        return Translator(self.generator)

    def _notes_chinese(self) -> bool:
        from .translate import notes_are_chinese

        index = self.index()
        if getattr(self, "_chinese_for", None) != index.path:
            self._chinese, self._chinese_for = notes_are_chinese(index.chunks), index.path
        return self._chinese

    def translation(self, question: str) -> str | None:
        """The Chinese translation an English question over Chinese notes is searched with (rag.translate),
        or None: another language, other notes, or settings.translate="off"."""
        from .translate import is_english

        if self.settings.translate == "off" or not is_english(question) or not self._notes_chinese():
            return None
        return self.translator(question)

    def search_text(self, question: str) -> str:
        from .translate import search_text

        return search_text(question, self.translation(question))

    def retrieve(self, question: str, k: int | None = None, timings: dict | None = None) -> Retrieval:
        """Retrieval as a question meets it: an English question over Chinese notes is searched together
        with the model's Chinese translation."""
        from .translate import search_text

        t = time.perf_counter()
        translation = self.translation(question)
        if timings is not None and translation is not None:
            timings["translate"] = time.perf_counter() - t
        retrieval = self.search(search_text(question, translation), k)
        retrieval.translation = translation
        return retrieval

    def rewrite(self, question: str, history: list[tuple[str, str]]) -> str:
        """Stand-alone version of a follow-up question, using the last turns of the conversation."""
        if not history:
            return question
        turns = "\n".join(f"用户: {q}\n助手: {a[:300]}" for q, a in history[-HISTORY_TURNS:])
        messages = [{"role": "system", "content": prompts.REWRITE_SYSTEM},
                    {"role": "user", "content": prompts.REWRITE_USER.format(history=turns, question=question)}]
        text = "".join(self.generator.stream(messages, max_tokens=64)).strip().splitlines()
        rewritten = text[0].strip() if text else ""
        return rewritten if 2 <= len(rewritten) <= 300 else question

    def ask(self, question: str, k: int | None = None, history: list[tuple[str, str]] | None = None) -> Iterator[Event]:
        """Stream an answer: `retrieved` (passages and the selected evidence), `token` events (only
        sentences the cheap checks accept; the rest wait for the full check), then `done`."""
        t0 = time.perf_counter()
        question = clean_query(question)
        query = self.rewrite(question, history) if history else question
        timings = {"rewrite": time.perf_counter() - t0}
        asked = query
        retrieval = self.retrieve(asked, k, timings)
        query = retrieval.query  # what was searched: with an English question, its translation too
        evidence = select_evidence(query, retrieval.hits, self.embedder) if retrieval.hits else []
        timings["retrieval"] = time.perf_counter() - t0 - timings["rewrite"] - timings.get("translate", 0.0)
        turn = _Turn(question, query, retrieval, evidence, t0, timings, asked=asked)
        yield Event("retrieved", retrieval=retrieval, text=query, evidence=evidence)
        turn.timings["evidence_shown"] = time.perf_counter() - t0
        plan = self._plan(turn)
        if isinstance(plan, Answer):
            yield Event("done", answer=plan)
            return
        messages, prefix, p_covered = plan
        parts: list[str] = []
        yield from self._stream(turn, messages, prefix, parts)
        yield Event("done", answer=self._finish(turn, "".join(parts).strip(), prefix, p_covered))

    def _declined(self, turn: "_Turn", p_covered: float | None = None, unknown=()) -> Answer:
        turn.timings["total"] = time.perf_counter() - turn.t0
        text = prompts.not_covered_message(turn.question, list(unknown))
        return Answer(turn.question, turn.query, text, turn.retrieval.hits, True, None, turn.timings, turn.evidence,
                      None, p_covered, list(unknown))

    def _plan(self, turn: "_Turn"):
        """Decide whether to answer: (messages, system-written prefix, P(covered)), or the declined Answer."""
        retrieval, evidence = turn.retrieval, turn.evidence
        if self.settings.answer_style != "evidence":
            if not retrieval.hits or not retrieval.covered:
                return self._declined(turn)
            return prompts.answer_messages(turn.question, retrieval.hits), "", None
        if not retrieval.hits or not evidence:
            return self._declined(turn)
        unknown = unknown_names(turn.asked, self.index().bm25.legs["jieba"])
        if retrieval.translation and not prompts.is_chinese(turn.asked):
            # An English sentence may capitalize ordinary words ("Global Average Pooling"); its translation
            # puts those into Chinese and keeps the names (LoRA, Kaiming).
            unknown = [w for w in unknown if w in retrieval.translation]
        if unknown:
            return self._declined(turn, 0.0, unknown)
        messages = prompts.evidence_messages(turn.question, evidence, retrieval.hits)
        turn.passages = self.linked_passages(retrieval.hits)
        p_covered = self.p_covered(retrieval, evidence, messages, turn.passages)
        turn.timings["judge"] = time.perf_counter() - turn.t0 - turn.timings["evidence_shown"]
        covered = retrieval.covered if p_covered is None else p_covered >= self._calibration.threshold
        if not covered:
            return self._declined(turn, p_covered)
        turn.said = quotes(evidence)
        return messages, prompts.quote_prefix(turn.said, retrieval.hits[turn.said[0].n - 1].chunk), p_covered

    def _stream(self, turn: "_Turn", messages: list[dict], prefix: str, parts: list[str]) -> Iterator[Event]:
        """Run the model, collecting its text in `parts`. The stream shows only sentences the cheap checks
        accept; a suspect one holds the rest back until the full check, so a contradiction is never on
        screen, not even for a moment."""
        evidence_style = self.settings.answer_style == "evidence"
        shown, held = 0, False
        if prefix:
            yield Event("token", text=prefix)
        try:
            link = {"passages": turn.passages} if turn.passages else {}
            for piece in self.generator.stream(messages, max_tokens=self.settings.max_new_tokens, prefix=prefix,
                                               **link):
                turn.timings.setdefault("first_token", time.perf_counter() - turn.t0)
                parts.append(piece)
                if not evidence_style:
                    yield Event("token", text=piece)
                    continue
                if not held:
                    text = "".join(parts)
                    upto, held = releasable(text, shown, turn.evidence, turn.quotes, len(turn.retrieval.hits),
                                             turn.alternatives, turn.query)
                    if upto > shown:
                        yield Event("token", text=text[shown:upto])
                        shown = upto
                        continue
                yield Event("pending")
        except RagError:
            raise
        except Exception as e:  # a backend bug must reach the user as one typed message, not a trace
            raise GenerationError(f"the language model failed mid-answer ({type(e).__name__}: {e})") from e

    def _finish(self, turn: "_Turn", raw: str, prefix: str, p_covered: float | None) -> Answer:
        """Check the citations and (evidence style) every sentence against the evidence."""
        if prompts.says_not_covered(raw):
            return self._declined(turn, p_covered)  # the model read the evidence and found no answer
        checked = check_citations(raw, [h.chunk.embed_text() for h in turn.retrieval.hits])
        verified, text = None, checked.text
        if self.settings.answer_style == "evidence":
            # What the reader was given besides the evidence: the question as searched (an English one with
            # its Chinese translation, so a Chinese conclusion restating it is not "novel").
            verified = verify_answer(checked.text, turn.evidence, self._scorer(), turn.quotes, turn.alternatives,
                                     turn.query)
            if verified.text and verified.verdicts and verified.verdicts[0].status in KEPT:
                instead = requote(verified, turn.said, turn.evidence)
                if instead is not None:  # the conclusion rests on another passage: quote that one
                    prefix = prompts.quote_prefix([instead], turn.retrieval.hits[instead.n - 1].chunk)
                text = prefix + verified.text
            else:  # the conclusion went: the quote stands alone (or before the evidence that replaced it)
                text = "\n".join(filter(None, [prefix.rstrip().removesuffix("所以，").rstrip(), verified.text]))
        turn.timings["total"] = time.perf_counter() - turn.t0
        return Answer(turn.question, turn.query, text, turn.retrieval.hits, False, checked, turn.timings,
                      turn.evidence, verified, p_covered)

    # -- evidence checks with the local model

    @property
    def _calibration(self):
        model = getattr(self.generator, "model_id", "")
        if getattr(self, "_cal_model", None) != model:
            self._cal, self._cal_model = load_calibration(model), model
        return self._cal

    def _scorer(self):
        return getattr(self.generator, "score", None)

    def judge(self, messages: list[dict], passages: tuple = ()) -> float | None:
        """log P("能") - log P("不能") that the evidence answers the question (None: no scoring backend)."""
        score = self._scorer()
        if score is None:
            return None
        link = {"passages": passages} if passages else {}
        (yes, _), (no, _) = score(messages, prompts.JUDGE_PREFIX, [prompts.JUDGE_YES, prompts.JUDGE_NO], **link)
        return yes - no

    def p_covered(self, retrieval: Retrieval, evidence: list[Evidence], messages: list[dict],
                  passages: tuple = ()) -> float | None:
        cal = self._calibration
        if cal is None:
            return None
        judge = self.judge(messages, passages)
        if judge is None:
            return None
        return cal.probability(self.abstain_signals(retrieval, evidence, judge))

    def abstain_signals(self, retrieval: Retrieval, evidence: list[Evidence], judge: float) -> list[float]:
        """The calibration's inputs (rag.abstain.FEATURES), here and in `rag eval abstain` alike."""
        # A translation is a Chinese question: its Latin words are terms (LoRA, GELU) the notes may lack.
        unseen = unseen_terms(retrieval.translation or retrieval.query, self.index().bm25.legs["jieba"])
        return features(retrieval, best_score(evidence), judge, unseen)

    def answer(self, question: str, k: int | None = None, history=None) -> Answer:
        for event in self.ask(question, k, history):
            if event.kind == "done":
                return event.answer
        raise AssertionError("ask() ended without a done event")
