"""doc2query: the local LLM writes, per chunk, the keywords and questions a student would use for it.

There is no Chinese sentence-embedding model offline, so a paraphrase ("梯度越往前传越小") only reaches
its passage through shared words. At index time, where time is cheap, the generator reads each chunk and
writes Chinese and English keywords plus a few questions in a student's words; a keyword leg over that
text (rag.retriever) then matches questions that share few words with the note itself.

The generated text lives in `<index_dir>/doc2query.jsonl`, next to the generations and shared by them:
    line 1   header {"rag": "doc2query", "format", "model", "prompt", "sum"}
    line 2+  one record per chunk content {"h": sha256 of the text the model read, "raw": its reply, "sum"}
Each line carries a checksum. Records are appended and fsynced one at a time, so Ctrl-C or a kill loses
at most the chunk being generated; a torn last line (no newline) is that chunk and is dropped on resume.
A damaged line anywhere else, or a header that is not ours, makes the file corrupt: it is not loaded.
`rag index --enrich` refuses a file another model or prompt wrote and starts a new one. Queries use
whatever records match the live chunks (the text is useful whichever model wrote it), re-reading the
file as it grows, so `rag ask` works before, during and after enrichment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .atomic import commit_file
from .errors import GenerationError, IndexCorrupt, IndexLocked, RagError

CACHE = "doc2query.jsonl"
LOCK = ".doc2query.lock"
FORMAT = 1
PROMPT_VERSION = 1  # bump with any change below: cached text from another prompt is regenerated

# Few-shot beats instructions for a 1.5B model: without the worked example it numbered its questions,
# answered them, or wrote Chinese "English keywords". The example is on a topic the corpus lacks (label
# smoothing), so it cannot leak words into any chunk's text. The shared prefix (system + example) is
# reused from the KV cache, so it costs nothing after the first chunk.
SYSTEM = ("你帮学生复习深度学习笔记。读一段笔记，写出学生会怎么问到它：用学生自己的口语，换掉笔记里的说法，"
          "可以只描述现象而不说术语名；再写一个英文问题和中英文关键词。只按示例的格式输出。")
EXAMPLE_PASSAGE = ("什么是标签平滑（label smoothing）？\n把 one-hot 标签里的 1 换成 1-ε，其余类别平分 ε。"
                   "这样模型不会把输出概率推到极端，减轻过拟合、过于自信的问题，常用于分类和机器翻译。")
EXAMPLE_REPLY = ("关键词：标签平滑, 软标签, 过度自信, 过拟合, label smoothing, soft labels, overconfidence\n"
                 "问：训练标签不用纯 0 和 1 会怎样？\n问：模型预测太自信、概率总是接近 1 怎么办？\n"
                 "问：one-hot 标签改成软一点的标签有什么好处？\n"
                 "Q: Why soften one-hot targets when training a classifier?")
USER = "笔记：\n{passage}"
PREFIX = "关键词："  # the reply is opened by us: the model starts in the format instead of chatting
MAX_NEW_TOKENS = 96
MAX_PASSAGE_CHARS = 1500  # chunks are ~400 characters; a huge one must not overflow the context
MAX_KEYWORDS = 16
MAX_QUESTIONS = 6


def prompt_key() -> str:
    """What the cached text depends on besides the model: the version and the exact prompt text."""
    text = "\x00".join([SYSTEM, EXAMPLE_PASSAGE, EXAMPLE_REPLY, USER, PREFIX, str(MAX_NEW_TOKENS)])
    return f"v{PROMPT_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def passage_of(chunk) -> str:
    """What the model reads for a chunk (and what its cache entry is keyed by)."""
    return chunk.embed_text()[:MAX_PASSAGE_CHARS]


def content_hash(passage: str) -> str:
    return hashlib.sha256(passage.encode("utf-8")).hexdigest()[:32]


def messages(passage: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER.format(passage=EXAMPLE_PASSAGE)},
            {"role": "assistant", "content": EXAMPLE_REPLY},
            {"role": "user", "content": USER.format(passage=passage)}]


# ---------------------------------------------------------------- the model's reply

_KEYWORD_SPLIT = re.compile(r"[,，、;；/]+")
_QUESTION = re.compile(r"^(?:问|Q|q)\s*[:：]\s*(.+)$")
_LABEL = re.compile(r"^(?:关键词|keywords?)\s*[:：]\s*", re.I)


def _keywords(line: str) -> list[str]:
    return [k.strip(" .。*`\"'“”") for k in _KEYWORD_SPLIT.split(_LABEL.sub("", line)) if k.strip(" .。*`\"'“”")]


def parse(raw: str) -> tuple[list[str], list[str]]:
    """(keywords, questions) from a reply that starts after PREFIX: duplicates and chatter dropped.
    Greedy decoding of a small model sometimes repeats one keyword until the token limit."""
    lines = [ln.strip().strip("*").strip() for ln in (PREFIX + raw).splitlines()]
    keywords: list[str] = []
    questions: list[str] = []
    for ln in lines:
        q = _QUESTION.match(ln)
        if q:
            text = q.group(1).strip()
            if text and text not in questions and len(questions) < MAX_QUESTIONS:
                questions.append(text)
        elif _LABEL.match(ln):
            for k in _keywords(ln):
                if k not in keywords and len(k) <= 40 and len(keywords) < MAX_KEYWORDS:
                    keywords.append(k)
    return keywords, questions


def document(raw: str) -> str:
    """The text the doc2query keyword leg indexes for one chunk."""
    keywords, questions = parse(raw)
    return "\n".join([" ".join(keywords)] + questions).strip()


def _runaway(text: str) -> bool:
    """The reply is looping: a line, or an item of the keyword line, came back a third time."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) != len(set(lines)) and any(lines.count(ln) >= 3 for ln in lines):
        return True
    first = _keywords(lines[0]) if lines else []
    return any(first.count(k) >= 3 for k in first)


def generate(generator, passage: str) -> str:
    """The model's raw reply for one passage (after PREFIX), cut when it starts looping."""
    parts: list[str] = []
    stream = generator.stream(messages(passage), max_tokens=MAX_NEW_TOKENS, prefix=PREFIX)
    try:
        for piece in stream:
            parts.append(piece)
            if _runaway("".join(parts)):
                break
    except RagError:
        raise
    except Exception as e:  # a backend bug becomes one typed message
        raise GenerationError(f"doc2query generation failed ({type(e).__name__}: {e})") from e
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    return "".join(parts).strip()


# ---------------------------------------------------------------- the cache file

def _sum(obj: dict) -> str:
    body = json.dumps({k: v for k, v in obj.items() if k != "sum"}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def _line(obj: dict) -> bytes:
    return (json.dumps({**obj, "sum": _sum(obj)}, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class CacheFile:
    """A read cache: its header, raw replies by content hash, and how many bytes of it are whole lines."""
    path: Path
    header: dict
    replies: dict[str, str] = field(default_factory=dict)
    size: int = 0  # bytes of complete, verified lines (a torn tail after them is not counted)
    records: int = 0

    @property
    def model(self) -> str:
        return self.header.get("model", "")

    @property
    def prompt(self) -> str:
        return self.header.get("prompt", "")


def _records(path: Path, data: bytes, first_line: int) -> Iterable[tuple[int, dict]]:
    """Verified records of `data` (complete lines only); a damaged one raises IndexCorrupt."""
    for n, raw in enumerate(data.split(b"\n")[:-1], first_line):
        try:
            obj = json.loads(raw.decode("utf-8"))
            ok = isinstance(obj, dict) and obj.get("sum") == _sum(obj)
        except (UnicodeDecodeError, ValueError):
            ok = False
        if not ok:
            raise IndexCorrupt(f"{path}:{n}: damaged doc2query record (checksum mismatch)")
        yield n, obj


def read_cache(path: Path) -> CacheFile | None:
    """The cache at `path`, fully verified; None when there is none. Raises IndexCorrupt."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IndexCorrupt(f"{path}: cannot read ({e.strerror or e})") from None
    whole = data[:data.rfind(b"\n") + 1]  # a torn last line is the chunk an interruption cut short
    cache = None
    for n, obj in _records(path, whole, 1):
        if cache is None:
            if obj.get("rag") != "doc2query" or obj.get("format") != FORMAT:
                raise IndexCorrupt(f"{path}: not a doc2query cache of format {FORMAT}")
            cache = CacheFile(Path(path), obj)
            continue
        if not isinstance(obj.get("h"), str) or not isinstance(obj.get("raw"), str):
            raise IndexCorrupt(f"{path}:{n}: doc2query record without hash or text")
        cache.replies[obj["h"]] = obj["raw"]
        cache.records += 1
    if cache is None:
        if data:
            raise IndexCorrupt(f"{path}: doc2query cache without a complete header")
        return None
    cache.size = len(whole)
    return cache


def _new_cache(path: Path, model: str, replies: dict[str, str] | None = None) -> CacheFile:
    """Write a fresh cache (header, and `replies` when compacting) in one atomic replace."""
    header = {"rag": "doc2query", "format": FORMAT, "model": model, "prompt": prompt_key()}
    tmp = path.with_name(path.name + ".tmp")  # rag.generations.cleanup_stale removes a leftover
    try:
        with open(tmp, "wb") as f:
            f.write(_line(header))
            for h, raw in (replies or {}).items():
                f.write(_line({"h": h, "raw": raw}))
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return read_cache(path)


@contextmanager
def _enrich_lock(index_dir: Path):
    """One enrichment per index at a time (its own lock: `rag index` updates may run meanwhile)."""
    import fcntl

    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLocked(f"another `rag index --enrich` is generating for {index_dir}; "
                              "try again when it finishes") from None
        yield
    finally:
        os.close(fd)


class _Appender:
    """Appends records after the verified part of the cache (dropping a torn tail first)."""

    def __init__(self, cache: CacheFile):
        self.path = cache.path
        self.f = open(self.path, "r+b")
        self.f.truncate(cache.size)
        self.f.seek(cache.size)

    def add(self, h: str, raw: str) -> None:
        self.f.write(_line({"h": h, "raw": raw}))
        self.f.flush()
        os.fsync(self.f.fileno())  # one fsync per chunk is nothing next to seconds of generation

    def close(self) -> None:
        self.f.close()


# ---------------------------------------------------------------- enrichment (index time)

@dataclass
class EnrichReport:
    chunks: int = 0  # distinct chunk texts in the index
    cached: int = 0  # already generated
    generated: int = 0
    seconds: float = 0.0
    model: str = ""
    restarted: str = ""  # why an existing cache was not used ("" when it was)


def _usable(path: Path, model: str, warn: Callable[[str], None]) -> tuple[CacheFile | None, str]:
    try:
        cache = read_cache(path)
    except IndexCorrupt as e:
        warn(f"{e} — generating again")
        return None, "corrupt"
    if cache is None:
        return None, ""
    if cache.model != model or cache.prompt != prompt_key():
        why = (f"model {cache.model}" if cache.model != model else f"prompt {cache.prompt}")
        warn(f"doc2query cache was written by {why}; now {model} with prompt {prompt_key()} — generating again")
        return None, why
    return cache, ""


def enrich(index_dir: Path, chunks: Iterable, model: str, load_generator: Callable[[], object],
           progress: Callable | None = None, warn: Callable[[str], None] = lambda m: None,
           limit: int | None = None) -> EnrichReport:
    """Generate doc2query text for every chunk whose text has none yet (`limit`: at most that many now).

    Interruptible: each finished chunk is on disk before the next starts; run again to resume. The
    generator is loaded only when something is missing, so an up-to-date run takes a file read."""
    t0 = time.monotonic()
    index_dir = Path(index_dir)
    path = index_dir / CACHE
    report = EnrichReport(model=model)
    with _enrich_lock(index_dir):
        cache, report.restarted = _usable(path, model, warn)
        passages: dict[str, str] = {}
        for c in chunks:
            p = passage_of(c)
            passages.setdefault(content_hash(p), p)
        report.chunks = len(passages)
        cached = cache.replies if cache else {}
        todo = [h for h in passages if h not in cached]
        report.cached = report.chunks - len(todo)
        if limit is not None:
            todo = todo[:limit]
        if cache is not None and cache.records > 2 * max(report.chunks, 50):
            # most records belong to chunks that are gone (edited files): keep the live ones only
            cache = _new_cache(path, model, {h: r for h, r in cached.items() if h in passages})
        if not todo:
            report.seconds = time.monotonic() - t0
            return report
        generator = load_generator()  # first: a model that cannot load must not cost the old cache
        if cache is None:
            cache = _new_cache(path, model)
        writer = _Appender(cache)
        bar = progress(total=len(todo), desc="doc2query", unit="chunk") if progress else None
        try:
            for h in todo:
                writer.add(h, generate(generator, passages[h]))
                report.generated += 1
                if bar:
                    bar.update(1)
        finally:
            writer.close()
            if bar:
                bar.close()
            report.seconds = time.monotonic() - t0
    return report


# ---------------------------------------------------------------- the keyword leg (query time)

class Doc2QueryLeg:
    """BM25 (rag.lexical, one per keyword analyzer) over the generated text of a generation's chunks,
    re-read when the cache changes. Rows are the generation's chunk rows; chunks without generated text
    are simply absent."""

    def __init__(self, index_dir: Path, chunks: Sequence, warn: Callable[[str], None] = lambda m: None):
        self.path = Path(index_dir) / CACHE
        self.chunks = chunks
        self.warn = warn
        self.problem = ""  # why the cache is not used (corrupt, another prompt), for a status line
        self.model = ""
        self._stamp = None
        self._rows_of: dict[str, list[int]] | None = None  # content hash -> chunk rows, read on first use
        self._bm25: dict = {}  # analyzer -> BM25 over the generated documents
        self._rows: list[int] = []  # document -> chunk row
        self._lock = threading.Lock()  # the UI searches from several threads

    def _hash_rows(self) -> dict[str, list[int]]:
        if self._rows_of is None:
            self._rows_of = {}
            for row, c in enumerate(self.chunks):
                self._rows_of.setdefault(content_hash(passage_of(c)), []).append(row)
        return self._rows_of

    def refresh(self) -> tuple[dict, list[int]]:
        """Re-read the cache if it changed since the last search (one stat call when it did not);
        returns ({analyzer: BM25}, rows) as one consistent pair."""
        with self._lock:
            self._refresh()
            return self._bm25, self._rows

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._bm25, self._rows, self.model, self.problem = {}, [], "", ""
        if stamp is None:
            return
        try:
            cache = read_cache(self.path)
        except IndexCorrupt as e:
            self.problem = f"{e}; searching without doc2query text (`rag index --enrich` rebuilds it)"
            self.warn(self.problem)
            return
        if cache is None:
            return
        if cache.prompt != prompt_key():  # refused until `rag index --enrich` regenerates it
            self.problem = f"{self.path} was written with prompt {cache.prompt}, not {prompt_key()}; not used"
            return
        from .lexical import ANALYZERS, BM25

        docs, rows = [], []
        for h, chunk_rows in self._hash_rows().items():
            raw = cache.replies.get(h)
            text = document(raw) if raw is not None else ""
            if text:
                for r in chunk_rows:
                    docs.append(text)
                    rows.append(r)
        if docs:
            self._bm25 = {name: BM25.from_texts(docs, name) for name in ANALYZERS}
            self._rows, self.model = rows, cache.model

    def __len__(self) -> int:
        """Chunks with generated text."""
        return len(self.refresh()[1])

    def search(self, query: str, k: int = 10, analyzer: str = "jieba") -> list:
        """LexicalHits with chunk rows, best first (empty when nothing has been generated)."""
        from .lexical import LexicalHit

        bm25, rows = self.refresh()
        if analyzer not in bm25:
            return []
        return [LexicalHit(rows[h.row], h.score, h.coverage) for h in bm25[analyzer].search(query, k)]
