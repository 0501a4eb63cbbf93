"""Gradio chat UI: streamed answers whose every citation opens the passage it came from.

Safety model. Everything a document or the model wrote is HTML-escaped here before it reaches the
page; the chatbot shows our HTML as is (render_markdown=False, so document text cannot turn into
markdown links or images) and gradio's sanitizer runs on top of it as a second layer. The server
binds to 127.0.0.1, never makes a share link, serves no local files (corpus, index and model cache
are blocked), keeps its API closed unless `api=True`, and runs one LLM job at a time behind a
bounded queue. Gradio itself is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import threading
import unicodedata
import uuid
from dataclasses import replace
from pathlib import Path

from .citations import CITATION, numbers_in, support
from .config import MAX_QUERY_CHARS, Settings
from .errors import CorpusError, LoaderError, ModelNotInstalled, RagError
from .evidence import sentence_pieces

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
QUEUE_SIZE = 16  # waiting jobs; more users get "queue is full" instead of piling up on a laptop
# Browser sessions whose state (conversation) gradio keeps, oldest evicted first. Its default of
# 10000 costs ~0.2 MB each: a long-running server grew without bound (eval/results/soak.md).
SESSIONS = 256
HISTORY_TURNS = 3  # turns of conversation given to the follow-up rewriter
MAX_PASSAGES = 10
HIGHLIGHT_MIN = 0.35  # share of bigrams a passage sentence must share with the answer to be marked

EXAMPLES = [
    "Batch Normalization 有什么作用？",
    "测试的时候要用 dropout 吗？",
    "如何缓解梯度消失问题？",
    "What is the trade-off between bias and variance?",
]


# ================================================================ rendering (pure, no gradio)

def esc(text) -> str:
    return html.escape(str(text), quote=True)


def source_id(turn: str, n: int) -> str:
    return f"rag-{turn}-src-{n}"


split_sentences = sentence_pieces  # the same sentence boundaries as evidence selection and checking


def _inline(text: str) -> str:
    """Escaped model text with the little markdown small models emit (bold, code, line breaks)."""
    s = esc(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"`([^`\n]+)`", r"<code>\1</code>", s)
    return s.replace("\n", "<br>")


def render_answer_text(text: str, n_passages: int, turn: str) -> str:
    """Answer text with every valid [n] turned into a link to source entry n of this turn."""
    out, pos = [], 0
    for m in CITATION.finditer(text):
        out.append(_inline(text[pos:m.start()]))
        for n in numbers_in(m.group(0)):
            out.append(f'<a class="rag-cite" href="#{source_id(turn, n)}" title="来源 {n}">[{n}]</a>'
                       if 1 <= n <= n_passages else esc(f"[{n}]"))
        pos = m.end()
    out.append(_inline(text[pos:]))
    return "".join(out)


def claims_for(answer_text: str, n: int) -> list[str]:
    """The sentences of the answer that cite passage n."""
    return [s for s in split_sentences(answer_text) if n in numbers_in(s)]


def highlight_passage(passage: str, claims: list[str]) -> str:
    """Escaped passage with the sentences that best support `claims` wrapped in <mark>."""
    sentences = split_sentences(passage)
    if not claims:
        return esc(passage)
    joined = CITATION.sub("", " ".join(claims))
    scores = []
    for s in sentences:
        if len(s.strip()) < 4:
            scores.append(0.0)
            continue
        # either most of this passage sentence appears in the answer, or it covers one claim well
        scores.append(max([support(s, joined)] + [support(CITATION.sub("", c), s) for c in claims]))
    best = max(scores, default=0.0)
    cut = max(HIGHLIGHT_MIN, 0.75 * best)
    return "".join(f"<mark>{esc(s)}</mark>" if best >= HIGHLIGHT_MIN and sc >= cut else esc(s)
                   for s, sc in zip(sentences, scores))


def _scores(hit) -> str:
    chips = [f"RRF {hit.score:.4f}"]
    if hit.dense is not None:
        chips.append(f"向量 {hit.dense:.3f}")
    if hit.bm25 is not None:
        chips.append(f"BM25 {hit.bm25:.2f}")
    chips.append(f"覆盖 {hit.coverage:.2f}")
    return "".join(f'<span class="rag-chip">{esc(c)}</span>' for c in chips)


def render_source(n: int, hit, turn: str, claims: list[str], show_scores: bool) -> str:
    c = hit.chunk
    heading = f'<span class="rag-q">{esc(c.heading)}</span>' if c.heading else ""
    return (
        f'<details class="rag-src" id="{source_id(turn, n)}">'
        f'<summary><span class="rag-num">{n}</span><span class="rag-file">{esc(c.source)}</span>{heading}'
        f'<span class="rag-pos">第 {c.line} 行 · 字符 {c.start}–{c.end}</span>'
        f'{_scores(hit) if show_scores else ""}</summary>'
        f'<div class="rag-passage">{highlight_passage(c.text, claims)}</div></details>')


def render_evidence(evidence, turn: str) -> str:
    """依据: the selected sentences, cited, on screen before the model writes anything."""
    if not evidence:
        return ""
    items = "".join(f'<li><a class="rag-cite" href="#{source_id(turn, e.n)}">[{e.n}]</a> {esc(e.text)} '
                    f'<span class="rag-dim">{esc(e.source)}:{e.line}</span></li>' for e in evidence)
    return f'<div class="rag-evidence"><div class="rag-sources-title">依据</div><ul>{items}</ul></div>'


def _notes(answer) -> str:
    ch = answer.checked
    verified = answer.verified.note() if getattr(answer, "verified", None) else ""
    if (ch is None or not ch.corrected) and not verified:
        return ""
    if ch is None or not ch.corrected:
        return f'<div class="rag-note">已核对：{esc(verified)}</div>'
    notes = [verified] if verified else []
    if ch.removed:
        notes.append("删除了指向不存在资料的引用 " + "".join(f"[{n}]" for n in ch.removed))
    if ch.replaced:
        notes.append("更正了引用 " + "、".join(f"[{a}]→[{b}]" for a, b in ch.replaced))
    if ch.attached:
        notes.append("为未标注来源的句子补充了引用 " + "".join(f"[{n}]" for n in ch.attached))
    return f'<div class="rag-note">引用已核对：{esc("；".join(notes))}</div>'


def _timings(answer, model: str) -> str:
    t = answer.timings
    parts = [f"检索 {t.get('retrieval', 0):.2f} s"]
    if t.get("rewrite", 0) >= 0.01:
        parts.insert(0, f"改写 {t['rewrite']:.1f} s")
    if "first_token" in t:
        parts.append(f"首字 {t['first_token']:.1f} s")
    parts.append(f"总计 {t.get('total', 0):.1f} s")
    if model and not answer.abstained:
        parts.append(model)
    return f'<div class="rag-meta">{esc(" · ".join(parts))}</div>'


def render_answer(answer, turn: str, show_scores: bool = False, model: str = "") -> str:
    """The final message: checked answer text, then every source it cites, then the other passages."""
    hits = answer.hits
    if answer.abstained:
        body = f'<div class="rag-text rag-abstain">{esc(answer.text)}</div>'
        if hits:
            body += ('<div class="rag-sources"><div class="rag-sources-title">最接近的资料（未用于回答）</div>'
                     + "".join(render_source(i, h, turn, [], show_scores) for i, h in enumerate(hits, 1))
                     + "</div>")
        return f'<div class="rag-answer">{body}{_timings(answer, model)}</div>'
    cited = answer.sources
    cited_nums = {n for n, _ in cited}
    body = (render_evidence(answer.evidence, turn)
            + f'<div class="rag-text">{render_answer_text(answer.text, len(hits), turn)}</div>' + _notes(answer))
    body += f'<div class="rag-sources"><div class="rag-sources-title">来源 · {len(cited)} 段资料</div>'
    if not cited:
        body += '<div class="rag-warn">回答中的内容无法对应到检索到的资料，请对照下面的段落自行核实。</div>'
    body += "".join(render_source(n, h, turn, claims_for(answer.text, n), show_scores) for n, h in cited)
    rest = [(i, h) for i, h in enumerate(hits, 1) if i not in cited_nums]
    if rest:
        body += (f'<details class="rag-more"><summary>其余 {len(rest)} 段检索结果（未被引用）</summary>'
                 + "".join(render_source(i, h, turn, [], show_scores) for i, h in rest) + "</details>")
    body += "</div>"
    return f'<div class="rag-answer">{body}{_timings(answer, model)}</div>'


CURSOR = '<span class="rag-cursor">▍</span>'


def render_streaming(text: str, hits: list, turn: str, show_scores: bool = False, evidence=()) -> str:
    """The evidence, then the answer so far, above the retrieved passages: they are readable while the
    model reads them too, and [n] links work before the answer is finished. The final render replaces this."""
    body = render_evidence(evidence, turn) + (
        f'<div class="rag-text">{render_answer_text(text, len(hits), turn)}{CURSOR}</div>' if text
        else render_wait("正在阅读资料并生成回答…"))
    if hits:
        body += (f'<div class="rag-sources"><div class="rag-sources-title">检索到 {len(hits)} 段资料</div>'
                 + "".join(render_source(i, h, turn, [], show_scores) for i, h in enumerate(hits, 1)) + "</div>")
    return f'<div class="rag-answer rag-streaming">{body}</div>'


def message_text(message: dict) -> str:
    """Text of a chat message, whether content is a string or gradio's list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content or [])


def mark_stopped(chat: list) -> list:
    """After the user pressed stop: the partial answer stays, flagged as unfinished and unchecked."""
    chat = list(chat or [])
    if chat and chat[-1].get("role") == "assistant":
        text = message_text(chat[-1])
        if "rag-wait" in text:
            chat[-1] = {"role": "assistant", "content": '<div class="rag-note">已停止。</div>'}
        elif "rag-streaming" in text:
            chat[-1] = {"role": "assistant", "content": text.replace(CURSOR, "") + (
                '<div class="rag-note">已停止生成：这段回答不完整，引用也没有经过核对。</div>')}
    return chat


def render_wait(message: str) -> str:
    return f'<div class="rag-wait"><span class="rag-spinner"></span>{esc(message)}</div>'


def render_error(message: str) -> str:
    return f'<div class="rag-error">⚠ {esc(message)}</div>'


_TURN_ID = re.compile(r'id="rag-([0-9a-f]{8})-src-\d+"')


def answer_id_in(value) -> str | None:
    """Feedback id of a rendered answer ("ui-<turn>", as recorded by answer_turn): its turn id is in
    the ids of its source entries. None for anything else (the retrieval note, an error, a stop)."""
    if isinstance(value, dict):
        value = message_text(value) if "content" in value else value.get("text", "")
    elif isinstance(value, list):
        value = message_text({"content": value})
    m = _TURN_ID.search(str(value or ""))
    return f"ui-{m.group(1)}" if m else None


def retrieval_message(question: str, query: str, retrieval) -> dict:
    """A collapsed 'thought' message showing what was actually searched."""
    rewritten = query.strip() != question.strip()
    title = f"🔎 检索了 {len(retrieval.hits)} 段资料" + (" · 追问已改写为独立问题" if rewritten else "")
    lines = [f'<div><b>检索查询：</b>{esc(query)}</div>']
    if rewritten:
        lines.append(f'<div class="rag-dim">原问题：{esc(question)}</div>')
    lines.append(f'<div class="rag-dim">关键词覆盖 {retrieval.best_coverage:.2f} · 最高向量相似度 '
                 f'{retrieval.best_dense:.3f} · {"资料覆盖此问题" if retrieval.covered else "资料未覆盖此问题"}</div>')
    return {"role": "assistant", "content": "".join(lines), "metadata": {"title": esc(title), "status": "done"}}


# ================================================================ documents (pure file operations)

def safe_document_name(name: str) -> str:
    """The basename an upload is saved under; anything path-like or hidden is rejected, not repaired."""
    name = unicodedata.normalize("NFC", str(name or "")).strip()
    if not name:
        raise CorpusError("文件名为空")
    if any(ch in name for ch in "/\\\x00") or any(unicodedata.category(ch) == "Cc" for ch in name):
        raise CorpusError(f"文件名不能包含路径或控制字符：{name!r}")
    if name in (".", "..") or name.startswith("."):
        raise CorpusError(f"不接受隐藏文件或相对路径：{name!r}")
    if len(name.encode("utf-8")) > 200:
        raise CorpusError("文件名过长（上限 200 字节）")
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise CorpusError(f"不支持的文件类型 “{suffix or '无扩展名'}”：支持 txt、md、html、pdf")
    return name


def _inside(corpus_dir: Path, path: Path) -> bool:
    root = corpus_dir.resolve()
    return path.resolve().parent == root or root in path.resolve().parents


def save_upload(corpus_dir: Path, uploaded: Path, name: str | None = None) -> tuple[str, bool]:
    """Copy an uploaded file into the corpus directory under its basename; (name, replaced an old file)."""
    from .loaders import load_file

    corpus_dir = Path(corpus_dir)
    uploaded = Path(uploaded)
    name = safe_document_name(name or uploaded.name)
    size = uploaded.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise CorpusError(f"{name}：文件过大（{size / 2**20:.1f} MB，上限 {MAX_UPLOAD_BYTES // 2**20} MB）")
    if size == 0:
        raise CorpusError(f"{name}：文件是空的")
    try:  # parse before saving: a file the index would skip never enters the corpus
        doc = load_file(uploaded, name)
    except LoaderError as e:
        raise CorpusError(f"{name}：无法读取（{e.reason}）") from None
    if not doc.text.strip():
        raise CorpusError(f"{name}：没有可索引的文字（扫描版 PDF？）")
    corpus_dir.mkdir(parents=True, exist_ok=True)
    dest = corpus_dir / name
    if dest.is_symlink() or not _inside(corpus_dir, dest) or (dest.exists() and not dest.is_file()):
        raise CorpusError(f"{name}：不能覆盖这个位置")
    replaced = dest.exists()
    tmp = corpus_dir / f".upload-{uuid.uuid4().hex}"  # hidden: the indexer never sees a half-copied file
    try:
        shutil.copyfile(uploaded, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return name, replaced


def corpus_sources(corpus_dir: Path) -> dict[str, Path]:
    from .index import scan_sources

    if not Path(corpus_dir).is_dir():
        return {}
    return {s.source: s.path for s in scan_sources([Path(corpus_dir)])}


def delete_document(corpus_dir: Path, source: str) -> None:
    """Remove one listed document from the corpus directory (only names the corpus scan lists)."""
    sources = corpus_sources(corpus_dir)
    if source not in sources:
        raise CorpusError(f"资料库中没有这个文档：{source!r}")
    if len(sources) == 1:
        raise CorpusError("这是资料库中最后一个文档；先上传新文档再删除它")
    path = sources[source]
    if not _inside(Path(corpus_dir), path):
        raise CorpusError(f"{source}：不在资料库目录内")
    path.unlink()


def document_rows(settings: Settings) -> list[list]:
    """One row per document in the corpus or the live index: name, size, chunks, last indexed, status."""
    from .index import current_generation, file_sha256, read_manifest

    try:
        gen = current_generation(settings.index_dir)
        manifest = read_manifest(gen) if gen else {}
    except RagError:
        manifest = {}
    indexed = manifest.get("files", {})
    skipped = {s["source"]: s["reason"] for s in manifest.get("skipped", [])}
    rows = []
    on_disk = corpus_sources(settings.corpus_dir)
    for source in sorted(set(on_disk) | set(indexed)):
        meta = indexed.get(source, {})
        path = on_disk.get(source)
        if path is None:
            status = "已删除，待重新索引"
        elif source in skipped and not meta:
            status = f"跳过：{skipped[source]}"
        elif not meta:
            status = "未索引"
        else:
            try:
                status = "已索引" if file_sha256(path) == meta.get("sha256") else "已修改，待重新索引"
            except OSError:
                status = "无法读取"
        size = path.stat().st_size if path is not None else meta.get("bytes", 0)
        rows.append([source, f"{size / 1024:.1f} KB", meta.get("chunks", "—"),
                     meta.get("indexed_at", "—").replace("T", " "), status])
    return rows


def build_summary(report) -> str:
    if report.up_to_date:
        text = f"索引已是最新（{report.chunks} 段，{len(report.unchanged)} 个文档，{report.seconds:.2f} s）。"
    else:
        text = (f"索引已更新：新增 {len(report.added)}、修改 {len(report.changed)}、删除 {len(report.removed)}、"
                f"未变 {len(report.unchanged)} 个文档；嵌入 {report.embedded} 段，共 {report.chunks} 段，"
                f"用时 {report.seconds:.1f} s。")
    for source, reason in report.skipped:
        text += f"\n跳过 {source}：{reason}"
    return text


# ================================================================ installed models

def installed_generators(current: str) -> list[tuple[str, str]]:
    """(label, spec) of packaged GGUF generators whose parts are installed, plus the configured one."""
    from .weights import PACKAGED, part_files

    out = []
    for name, m in PACKAGED.items():
        if m.kind != "gguf":
            continue
        try:
            part_files(m)
        except ModelNotInstalled:
            continue
        out.append((f"{name}（{m.size / 1e9:.1f} GB）", f"packaged:{name}"))
    if current not in [spec for _, spec in out]:
        out.insert(0, (current, current))
    return out


# ================================================================ backend: the assistant behind the page

class _Bar:
    def __init__(self, tracker, total, desc, unit):
        self.tracker, self.total, self.desc, self.unit, self.n = tracker, total, desc, unit, 0

    def update(self, n=1):
        self.n += n
        self.tracker.report(self)

    def close(self):
        self.tracker.report(None)


class ProgressTracker:
    """tqdm-shaped factory handed to the Assistant: records the current activity for the status bar
    and forwards to a per-thread listener (the gr.Progress of the event doing a re-index)."""

    def __init__(self):
        self.activity = ""
        self.local = threading.local()

    def __call__(self, total=None, desc="", unit="", unit_scale=False, **_):
        return _Bar(self, total, desc, unit)

    def report(self, bar):
        if bar is None:
            self.activity = ""
            return
        # the library's progress labels are English ("assembling <model>", "embedding")
        what = "组装并校验模型文件" if bar.desc.startswith("assembling") else \
            "嵌入段落" if bar.desc == "embedding" else bar.desc
        if bar.unit == "B":
            self.activity = f"{what} {bar.n / 2**20:.0f}/{(bar.total or 0) / 2**20:.0f} MB"
        else:
            self.activity = f"{what} {bar.n}/{bar.total or '?'}"
        listener = getattr(self.local, "listener", None)
        if listener is not None:
            listener(bar)


class Backend:
    """One Assistant shared by every browser tab; the chosen model is global (one LLM in memory)."""

    def __init__(self, settings: Settings, embedder=None, generator=None):
        from .assistant import Assistant

        self.settings = settings
        self.tracker = ProgressTracker()
        self._injected = (settings.generator, generator) if generator is not None else None
        self.assistant = Assistant(settings, embedder=embedder, generator=generator,
                                   progress=self.tracker, warn=self._warn)
        self.state = "idle"  # idle (loads on first question) | loading | ready | error
        self.stage = ""
        self.error = ""
        self._ready: set[str] = set()
        self._lock = threading.Lock()
        self._warming = None
        self._warm_thread: threading.Thread | None = None
        self.gate = None  # rag.gate.GenerationGate under `rag serve`: one slot shared with the HTTP API
        self.feedback = None  # rag.feedback.FeedbackStore: answers are recorded so they can be rated

    def _warn(self, message: str) -> None:
        log.warning(message)

    @property
    def model(self) -> str:
        return self.assistant.settings.generator

    def is_ready(self) -> bool:
        return self.model in self._ready

    def mark_ready(self, spec: str) -> None:
        self._ready.add(spec)
        if spec == self.model:
            self.state, self.stage = "ready", ""

    def warm_up(self, assistant=None) -> None:
        """Load embedder, index and LLM now, so the first question does not pay for it."""
        assistant = assistant or self.assistant

        def current() -> bool:  # a model switch may have replaced it meanwhile
            return assistant is self.assistant

        try:
            # One search loads the index and jieba's dictionary (~1 s): the first question's evidence is
            # then on screen in milliseconds, like every later one's.
            for stage, load in [("嵌入模型", lambda: assistant.embedder), ("索引", lambda: assistant.search("深度学习")),
                                (f"语言模型 {short_model(assistant.settings.generator)}", lambda: assistant.generator)]:
                if current():
                    self.stage = stage
                load()
            self.mark_ready(assistant.settings.generator)
        except RagError as e:
            if current():
                self.state, self.error = "error", str(e)
        except Exception as e:  # the page shows a message, the log keeps the trace
            log.exception("warm-up failed")
            if current():
                self.state, self.error = "error", f"加载失败（{type(e).__name__}: {e}）"

    def warm_up_in_background(self) -> None:
        """Start loading the current assistant's models, once (repeated calls while loading do nothing)."""
        with self._lock:
            assistant = self.assistant
            if self._warming is assistant and self._warm_thread is not None and self._warm_thread.is_alive():
                return
            self.state, self.error = "loading", ""  # before the thread starts: the page shows it at once
            self._warming = assistant
            self._warm_thread = threading.Thread(target=self.warm_up, args=(assistant,), name="rag-warm-up",
                                                 daemon=True)
            self._warm_thread.start()

    def switch_model(self, spec: str) -> None:
        from .assistant import Assistant

        allowed = [s for _, s in installed_generators(self.settings.generator)]
        if spec not in allowed:
            raise ModelNotInstalled(f"未安装的模型：{spec}")
        with self._lock:
            if spec == self.model:
                return
            injected = self._injected[1] if self._injected and self._injected[0] == spec else None
            # the previous Assistant (and its LLM) is dropped: a laptop keeps one model in memory
            self.assistant = Assistant(replace(self.settings, generator=spec), embedder=self.assistant.embedder,
                                       generator=injected, progress=self.tracker, warn=self._warn)
            if injected is not None:
                self._ready.add(spec)
            else:
                self._ready.discard(spec)
            self.state = "ready" if spec in self._ready else "loading"

    def status_html(self) -> str:
        if self.state == "error":
            return f'<div class="rag-status err"><span class="dot"></span>{esc(self.error)}</div>'
        if self.state == "idle":
            return ('<div class="rag-status busy"><span class="dot"></span>'
                    f'语言模型 {esc(short_model(self.model))} 将在第一次提问时加载</div>')
        if self.state != "ready":
            activity = self.tracker.activity
            what = f"正在加载{self.stage}" + (f" · {activity}" if activity else "…")
            return f'<div class="rag-status busy"><span class="dot"></span>{esc(what)}</div>'
        try:
            idx = self.assistant.index()
            docs, chunks = len(idx.manifest.get("files", {})), idx.manifest["counts"]["chunks"]
        except RagError as e:
            return f'<div class="rag-status err"><span class="dot"></span>{esc(e)}</div>'
        gen = self.assistant.generator
        return (f'<div class="rag-status ok" title="{esc(self.model)}"><span class="dot"></span>就绪 · '
                f'{esc(short_model(self.model))} · {esc(gen.backend)} · {docs} 个文档 · {chunks} 段</div>')


def short_model(spec: str) -> str:
    return spec.split(":", 1)[1] if spec.startswith("packaged:") else Path(spec).name or spec


# ================================================================ the gradio app

HEAD = """<script>
/* [n] links open and reveal their source entry (a <details> further down the same answer). */
document.addEventListener('click', function (e) {
  var a = e.target.closest ? e.target.closest('a.rag-cite') : null;
  if (!a) return;
  var el = document.getElementById((a.getAttribute('href') || '').slice(1));
  if (!el) return;
  e.preventDefault();
  for (var d = el; d; d = d.parentElement ? d.parentElement.closest('details') : null) d.open = true;
  el.scrollIntoView({behavior: 'smooth', block: 'center'});
  el.classList.remove('rag-flash'); void el.offsetWidth; el.classList.add('rag-flash');
}, true);
/* A streamed answer is re-rendered on every token; keep the sources the reader opened open. */
var ragOpen = new Set();
document.addEventListener('toggle', function (e) {
  var d = e.target;
  if (!d.classList || !d.classList.contains('rag-src') || !d.id) return;
  if (d.open) ragOpen.add(d.id); else if (d.isConnected) ragOpen.delete(d.id);
}, true);
new MutationObserver(function () {
  ragOpen.forEach(function (id) { var d = document.getElementById(id); if (d && !d.open) d.open = true; });
}).observe(document.documentElement, {childList: true, subtree: true});
</script>"""

CSS = """
.gradio-container { width: 100% !important; max-width: 1080px !important; margin: 0 auto !important; }
#rag-header { align-items: center; }
#rag-header h1 { font-size: 1.45rem; margin: 0; }
#rag-status-box { display: flex; justify-content: flex-end; }
#rag-header .sub { color: var(--body-text-color-subdued); font-size: .9rem; }
.rag-status { display: inline-flex; align-items: center; gap: 8px; padding: 4px 12px; border-radius: 999px;
  white-space: nowrap; max-width: 100%; overflow: hidden; text-overflow: ellipsis;
  font-size: .85rem; border: 1px solid var(--border-color-primary); background: var(--block-background-fill); }
.rag-status .dot { width: 8px; height: 8px; border-radius: 50%; background: #9ca3af; flex: none; }
.rag-status.ok .dot { background: #16a34a; }
.rag-status.busy .dot { background: #f59e0b; animation: rag-pulse 1s infinite; }
.rag-status.err { color: #b91c1c; } .rag-status.err .dot { background: #dc2626; }
@keyframes rag-pulse { 50% { opacity: .3; } }
#rag-chat .message-row .message { max-width: 100% !important; }
#rag-chat .bot-row .message { width: 100%; }
.rag-text { line-height: 1.75; font-size: 1rem; }
.rag-abstain { color: var(--body-text-color-subdued); }
a.rag-cite { display: inline-block; margin: 0 1px; padding: 0 5px; border-radius: 6px; font-size: .78em;
  line-height: 1.5; vertical-align: 2px; text-decoration: none !important; font-weight: 600;
  color: var(--color-accent) !important; background: var(--color-accent-soft); }
a.rag-cite:hover { filter: brightness(.92); }
.rag-cursor { animation: rag-pulse 1s infinite; color: var(--color-accent); }
.rag-wait { display: flex; align-items: center; gap: 10px; color: var(--body-text-color-subdued); }
.rag-spinner { width: 14px; height: 14px; border-radius: 50%; border: 2px solid var(--border-color-primary);
  border-top-color: var(--color-accent); animation: rag-spin .8s linear infinite; }
@keyframes rag-spin { to { transform: rotate(360deg); } }
.rag-error { color: #b91c1c; }
.rag-note, .rag-warn { margin-top: 8px; font-size: .82rem; padding: 6px 10px; border-radius: 8px;
  background: var(--background-fill-secondary); color: var(--body-text-color-subdued); }
.rag-warn { color: #b45309; }
.rag-evidence { margin-bottom: 10px; padding: 6px 10px; border-left: 3px solid var(--color-accent);
  background: var(--background-fill-secondary); border-radius: 6px; font-size: .9rem; }
.rag-evidence ul { margin: 0; padding-left: 1.1em; }
.rag-sources { margin-top: 14px; border-top: 1px dashed var(--border-color-primary); padding-top: 10px; }
.rag-sources-title { font-size: .8rem; font-weight: 600; letter-spacing: .03em; margin-bottom: 6px;
  color: var(--body-text-color-subdued); }
details.rag-src { margin: 6px 0; border: 1px solid var(--border-color-primary); border-radius: 10px;
  background: var(--block-background-fill); overflow: hidden; transition: box-shadow .3s; }
details.rag-src > summary { cursor: pointer; padding: 7px 10px; display: flex; flex-wrap: wrap; align-items: center;
  gap: 4px 10px; font-size: .86rem; list-style: none; }
details.rag-src > summary::-webkit-details-marker { display: none; }
details.rag-src[open] > summary { border-bottom: 1px solid var(--border-color-primary);
  background: var(--background-fill-secondary); }
.rag-num { min-width: 20px; height: 20px; border-radius: 6px; display: inline-flex; align-items: center;
  justify-content: center; font-weight: 700; font-size: .75rem; color: var(--color-accent);
  background: var(--color-accent-soft); }
.rag-file { font-weight: 600; }
.rag-file::before { content: "📄 "; }
.rag-q { color: var(--body-text-color); flex: 1 1 240px; min-width: 0; }
.rag-pos { color: var(--body-text-color-subdued); font-size: .78rem; white-space: nowrap; }
.rag-chip { font-size: .72rem; padding: 1px 6px; border-radius: 5px; background: var(--background-fill-secondary);
  color: var(--body-text-color-subdued); font-family: var(--font-mono); }
.rag-passage { padding: 10px 12px; white-space: pre-wrap; font-size: .9rem; line-height: 1.7;
  max-height: 320px; overflow-y: auto; }
.rag-passage mark { background: rgba(250, 204, 21, .35); color: inherit; border-radius: 3px; padding: 0 1px; }
details.rag-more { margin-top: 8px; }
details.rag-more > summary { cursor: pointer; font-size: .82rem; color: var(--body-text-color-subdued); }
.rag-flash { box-shadow: 0 0 0 3px var(--color-accent); }
.rag-meta { margin-top: 10px; font-size: .75rem; color: var(--body-text-color-subdued); }
.rag-dim { color: var(--body-text-color-subdued); font-size: .85rem; }
#rag-input textarea { font-size: 1rem; }
.rag-doc-msg { padding: 8px 12px; border-radius: 8px; font-size: .9rem; line-height: 1.7;
  background: var(--background-fill-secondary); border-left: 3px solid var(--border-color-primary); }
.rag-doc-msg.ok { border-left-color: #16a34a; } .rag-doc-msg.warn { border-left-color: #f59e0b; }
.rag-doc-msg.err { border-left-color: #dc2626; color: #b91c1c; }
footer { opacity: .6; }
"""


def _theme():
    import gradio as gr

    # System fonts only: the default theme pulls web fonts from the internet, which this app must never do.
    sans = ["system-ui", "-apple-system", "Segoe UI", "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC",
            "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=sans,
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def build_app(backend: Backend, api: bool = False):
    import gradio as gr

    visibility = "public" if api else "private"
    settings = backend.settings

    # ---------------------------------------------------------------- chat
    def start_turn(message, chat):
        message = (message or "").strip()
        if not message:
            return "", chat or [], ""
        return "", (chat or []) + [{"role": "user", "content": esc(message)}], message

    def answer_turn(question, chat, turns, k, show_scores):
        """Stream one answer into the chat. `turns` holds the plain (question, answer) history."""
        chat, turns = list(chat or []), list(turns or [])
        question = (question or "").strip()
        if not question:
            yield chat, turns
            return
        if not chat or chat[-1].get("role") != "user":
            chat.append({"role": "user", "content": esc(question)})
        turn = uuid.uuid4().hex[:8]
        base = len(chat)
        try:
            assistant = backend.assistant
            if not backend.is_ready():
                chat.append({"role": "assistant", "content": render_wait(
                    f"正在加载语言模型 {short_model(backend.model)}，首次加载需要一点时间…")})
                yield chat, turns
                _ = assistant.generator
                backend.mark_ready(assistant.settings.generator)
                chat = chat[:base]
            chat.append({"role": "assistant", "content": render_wait(
                "正在结合上文理解追问…" if turns else "正在检索资料…")})
            yield chat, turns
            hits, text, evidence = [], "", []
            k = min(max(int(k or settings.top_k), 1), MAX_PASSAGES)  # the API is not bound by the slider
            history = turns[-HISTORY_TURNS:]
            if backend.gate is not None:  # `rag serve`: the API's queue and stall watchdog apply here too
                events = backend.gate.stream(lambda: assistant.ask(question, k, history=history), bounded=False)
            else:
                events = assistant.ask(question, k, history=history)
            for ev in events:
                if ev.kind == "retrieved":
                    hits, evidence = ev.retrieval.hits, ev.evidence
                    chat = chat[:base] + [retrieval_message(question, ev.text, ev.retrieval), {
                        "role": "assistant", "content": render_streaming("", hits, turn, bool(show_scores), evidence)}]
                elif ev.kind == "token":
                    text += ev.text
                    chat[-1] = {"role": "assistant",
                                "content": render_streaming(text, hits, turn, bool(show_scores), evidence)}
                elif ev.kind == "done":
                    ans = ev.answer
                    chat[-1] = {"role": "assistant",
                                "content": render_answer(ans, turn, bool(show_scores),
                                                         short_model(assistant.settings.generator))}
                    turns.append((question, ans.text))
                    if backend.feedback is not None:
                        backend.feedback.record_answer(f"ui-{turn}", ans, assistant.settings.generator, backend)
                yield chat, turns
        except RagError as e:
            chat = chat[:base] + [{"role": "assistant", "content": render_error(str(e))}]
            yield chat, turns
        except Exception as e:  # never a stack trace in the page
            log.exception("answer failed")
            chat = chat[:base] + [{"role": "assistant", "content": render_error(f"内部错误（{type(e).__name__}），详情见服务端日志")}]
            yield chat, turns

    # ---------------------------------------------------------------- feedback (when a store is attached)
    def rate_answer(last, data):
        answer_id = answer_id_in(data.value)
        if backend.feedback is None or answer_id is None or data.liked not in (True, False):
            return last
        try:
            backend.feedback.rate(answer_id, "up" if data.liked else "down", channel="ui")
        except RagError as e:
            gr.Warning(str(e))
            return last
        gr.Info("已记录 👍，谢谢" if data.liked else "已记录 👎：可以在下方写下正确的答案")
        return answer_id

    def send_correction(text, last):
        text = (text or "").strip()
        if not text:
            return text
        if backend.feedback is None or not last:
            gr.Warning("先用 👎 标记要更正的回答")
            return text
        try:
            backend.feedback.rate(last, "down", text, channel="ui")
        except RagError as e:
            gr.Warning(str(e))
            return text
        gr.Info("更正已保存，会进入待审核的评测集")
        return ""

    rate_answer.__annotations__["data"] = gr.LikeData

    def pick_example(chat, evt):
        text = evt.value["text"] if isinstance(evt.value, dict) else str(evt.value)
        return start_turn(text, chat)

    # gradio injects event data by annotation; a real class is needed (this module postpones annotations)
    pick_example.__annotations__["evt"] = gr.SelectData

    # ---------------------------------------------------------------- documents
    def docs_outputs(message: str = "", kind: str = "info"):
        rows = document_rows(settings)
        names = [r[0] for r in rows if r[4] != "已删除，待重新索引"]
        box = (f'<div class="rag-doc-msg {kind}">{"<br>".join(esc(x) for x in message.splitlines())}</div>'
               if message else "")
        return box, rows, gr.Dropdown(choices=names, value=None), backend.status_html()

    def run_build(progress, rebuild=False) -> str:
        def listener(bar):
            if bar.total:
                progress((bar.n, bar.total), desc=bar.desc, unit=bar.unit or "steps")

        backend.tracker.local.listener = listener
        try:
            progress(0, desc="扫描文档")
            return build_summary(backend.assistant.build(rebuild=rebuild))
        finally:
            backend.tracker.local.listener = None

    def upload(files, progress=gr.Progress()):
        lines, saved = [], 0
        for f in files or []:
            path = Path(f if isinstance(f, str) else getattr(f, "path", None) or f.name)
            try:
                name, replaced = save_upload(settings.corpus_dir, path)
                lines.append(f"{'已替换' if replaced else '已添加'} {name}")
                saved += 1
            except CorpusError as e:
                lines.append(f"未添加 — {e}")
            except OSError as e:
                lines.append(f"未添加 {path.name} — 无法保存（{e.strerror or e}）")
        kind = "ok" if saved and saved == len(files or []) else "warn"
        if saved:
            try:
                lines.append(run_build(progress))
            except RagError as e:
                lines.append(f"重新索引失败：{e}")
                kind = "err"
        return *docs_outputs("\n".join(lines) or "没有选择文件", kind), None

    def delete(source, confirmed, progress=gr.Progress()):
        if not source:
            return docs_outputs("先在列表中选择要删除的文档", "warn")
        if not confirmed:
            return docs_outputs("已取消删除", "info")
        try:
            delete_document(settings.corpus_dir, source)
            return docs_outputs(f"已从资料库删除 {source}\n" + run_build(progress), "ok")
        except RagError as e:
            return docs_outputs(str(e), "err")

    def reindex(rebuild, progress=gr.Progress()):
        try:
            return docs_outputs(run_build(progress, bool(rebuild)), "ok")
        except RagError as e:
            return docs_outputs(str(e), "err")

    # ---------------------------------------------------------------- settings / status
    def tick():
        return backend.status_html(), gr.Timer(active=backend.state == "loading")

    def change_model(spec):
        try:
            backend.switch_model(spec)
        except RagError as e:
            gr.Warning(str(e))
            return backend.status_html(), gr.Timer(active=False), gr.Dropdown(value=backend.model)
        if not backend.is_ready():
            backend.warm_up_in_background()
        return backend.status_html(), gr.Timer(active=True), gr.Dropdown(value=backend.model)

    def on_load():
        return (gr.Timer(active=backend.state == "loading"),
                gr.Dropdown(choices=installed_generators(settings.generator), value=backend.model), *docs_outputs())

    # ---------------------------------------------------------------- layout
    with gr.Blocks(title="深度学习面试笔记助手", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        turns = gr.State([])
        with gr.Row(elem_id="rag-header"):
            gr.HTML('<div><h1>深度学习面试笔记助手</h1><div class="sub">离线问答 · 每个回答都标注来源，点击 [n] 查看原文'
                    '</div></div>', scale=1)
            status = gr.HTML(backend.status_html(), elem_id="rag-status-box", scale=1)
        timer = gr.Timer(1.0, active=True)
        with gr.Tabs():
            with gr.Tab("问答", id="chat"):
                chatbot = gr.Chatbot(
                    elem_id="rag-chat", show_label=False, render_markdown=False, height="64vh",
                    feedback_options=("Like", "Dislike") if backend.feedback is not None else None, buttons=[],
                    layout="panel", group_consecutive_messages=True,
                    examples=[{"text": q} for q in EXAMPLES],
                    placeholder="<b>问我深度学习面试题</b><br>回答只依据资料库中的笔记，并标出每句话的来源。")
                with gr.Row(equal_height=True):
                    msg = gr.Textbox(elem_id="rag-input", show_label=False, scale=8, lines=1, max_lines=6,
                                     max_length=MAX_QUERY_CHARS, autofocus=True,
                                     placeholder="输入问题，Enter 发送（支持中文或英文；可以追问）")
                    send = gr.Button("发送", variant="primary", scale=1, min_width=80, elem_id="rag-send")
                    stop = gr.Button("停止", variant="stop", scale=1, min_width=70)
                    clear = gr.Button("新对话", scale=1, min_width=80)
                pending = gr.Textbox(visible=False)
                rated = gr.State("")  # id of the answer rated last, for the correction box
                with gr.Row(visible=backend.feedback is not None):
                    correction = gr.Textbox(show_label=False, scale=8, lines=1, max_lines=4, max_length=4000,
                                            placeholder="回答有误？点 👎 后可以在这里写下正确的答案（可选）")
                    correct_btn = gr.Button("提交更正", scale=1, min_width=80, size="sm")
            with gr.Tab("文档", id="docs"):
                gr.Markdown(f"资料库目录 `{settings.corpus_dir}`，索引目录 `{settings.index_dir}`。"
                            f"上传的文件只按文件名保存到资料库目录，然后增量索引"
                            f"（支持 txt、md、html、pdf，单个文件不超过 {MAX_UPLOAD_BYTES // 2**20} MB）。")
                doc_msg = gr.HTML()
                doc_table = gr.Dataframe(headers=["文档", "大小", "段落数", "最近索引", "状态"],
                                         datatype=["str", "str", "str", "str", "str"], interactive=False,
                                         wrap=True, elem_id="rag-docs")
                with gr.Row():
                    with gr.Column(scale=3):
                        files = gr.File(label="上传文档", file_count="multiple", file_types=list(UPLOAD_SUFFIXES),
                                        height=140, elem_id="rag-upload")
                    with gr.Column(scale=2):
                        # custom values allowed: another tab may have added files; delete_document() checks
                        # every name against the corpus scan anyway
                        doc_pick = gr.Dropdown(label="删除文档", choices=list(corpus_sources(settings.corpus_dir)),
                                               value=None, interactive=True, allow_custom_value=True)
                        confirm = gr.Checkbox(visible=False)
                        del_btn = gr.Button("从资料库删除", variant="stop", size="sm")
                        rebuild = gr.Checkbox(label="完全重建（重新嵌入全部段落）", value=False)
                        reindex_btn = gr.Button("重新索引", size="sm")
            with gr.Tab("设置", id="settings"):
                k = gr.Slider(1, MAX_PASSAGES, value=settings.top_k, step=1, label="检索段落数",
                              info="每个问题交给模型的资料段数；越多越全面，但生成越慢")
                show_scores = gr.Checkbox(label="在来源中显示检索分数（RRF、向量相似度、BM25、关键词覆盖）", value=False)
                model = gr.Dropdown(label="语言模型（对所有会话生效）", choices=installed_generators(settings.generator),
                                    value=backend.model, interactive=True,
                                    info="只列出已安装的模型；切换后首次回答前需要加载")
                gr.Markdown(f"嵌入模型 `{settings.embedder}` · 服务只监听本机，不创建公开链接，不联网。")

        # ---------------------------------------------------------------- events
        chat_in = dict(fn=start_turn, inputs=[msg, chatbot], outputs=[msg, chatbot, pending],
                       queue=False, api_visibility="private")
        answer = dict(fn=answer_turn, inputs=[pending, chatbot, turns, k, show_scores], outputs=[chatbot, turns],
                      concurrency_limit=1, concurrency_id="llm", show_progress="minimal")
        e1 = msg.submit(**chat_in).then(**answer, api_name="ask", api_visibility=visibility)
        e2 = send.click(**chat_in).then(**answer, api_visibility="private")
        e3 = chatbot.example_select(pick_example, [chatbot], [msg, chatbot, pending], queue=False,
                                    api_visibility="private").then(**answer, api_visibility="private")
        chatbot.like(rate_answer, [rated], [rated], queue=False, api_visibility="private")
        correct_btn.click(send_correction, [correction, rated], [correction], queue=False, api_visibility="private")
        correction.submit(send_correction, [correction, rated], [correction], queue=False, api_visibility="private")
        stop.click(mark_stopped, [chatbot], [chatbot], cancels=[e1, e2, e3], queue=False, api_visibility="private")
        clear.click(lambda: ([], [], ""), None, [chatbot, turns, msg], queue=False, cancels=[e1, e2, e3],
                    api_visibility="private")
        chatbot.clear(lambda: [], None, [turns], queue=False, cancels=[e1, e2, e3], api_visibility="private")

        doc_outs = [doc_msg, doc_table, doc_pick, status]
        files.upload(upload, [files], doc_outs + [files], api_name="upload_documents", api_visibility=visibility,
                     concurrency_limit=1, concurrency_id="index")
        del_btn.click(delete, [doc_pick, confirm], doc_outs, api_name="delete_document", api_visibility=visibility,
                      concurrency_limit=1, concurrency_id="index",
                      js="(name, c) => [name, !!name && confirm('从资料库删除 “' + name + '”？\\n文件会从资料库目录移除，并重新索引。')]")
        reindex_btn.click(reindex, [rebuild], doc_outs, api_name="reindex", api_visibility=visibility,
                          concurrency_limit=1, concurrency_id="index")
        timer.tick(tick, None, [status, timer], queue=False, api_visibility="private", show_progress="hidden")
        model.input(change_model, [model], [status, timer, model], concurrency_limit=1, concurrency_id="llm",
                    api_visibility="private")
        demo.load(on_load, None, [timer, model] + doc_outs, queue=False, api_visibility="private",
                  show_progress="hidden")
    return demo


def launch(settings: Settings | None = None, host: str = "127.0.0.1", port: int | None = None, api: bool = False,
           embedder=None, generator=None, warm_up: bool = True, block: bool = True, inbrowser: bool = False,
           quiet: bool = False, queue_size: int = QUEUE_SIZE):
    """Start the UI. With block=False returns the running gr.Blocks (call .close() to stop it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = settings or Settings.from_env()
    if not Path(settings.corpus_dir).is_dir():
        raise CorpusError(f"corpus directory not found: {settings.corpus_dir}")
    backend = Backend(settings, embedder=embedder, generator=generator)
    from .feedback import FeedbackStore, default_path

    backend.feedback = FeedbackStore(default_path(settings))  # 👍/👎 on answers (rag eval feedback)
    if warm_up:  # started first, so the page's initial status already says what is loading
        backend.warm_up_in_background()
    demo = build_app(backend, api=api)
    # One LLM job at a time (default limit 1), a bounded queue whose users see their position, and no
    # direct REST calls that skip the queue.
    demo.queue(max_size=queue_size, api_open=False, default_concurrency_limit=1)
    private = [str(Path(p).resolve()) for p in (settings.corpus_dir, settings.index_dir, settings.cache_dir)]
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can ask, upload and delete documents", host)
    demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=inbrowser, quiet=quiet,
        prevent_thread_lock=not block, show_error=False, ssr_mode=False, mcp_server=False, pwa=False,
        footer_links=(["api", "gradio"] if api else ["gradio"]), run_history=False,
        allowed_paths=[], blocked_paths=private, max_file_size=MAX_UPLOAD_BYTES,
        enable_monitoring=False,  # gradio's default serves /monitoring/summary to anyone and prints its key
        state_session_capacity=SESSIONS,
        theme=_theme(), css=CSS, head=HEAD)
    return demo
