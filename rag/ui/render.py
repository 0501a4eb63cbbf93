"""HTML for the chat page: answers, citations, sources, evidence, status and the documents table.

Pure functions of their arguments (no gradio, no state), so they are tested without a server.
Everything a document or the model wrote is HTML-escaped here before it reaches the page.
"""

from __future__ import annotations

import html
import re

from ..citations import CITATION, numbers_in, support
from ..corpus import DocStatus, Document
from ..evidence import sentence_pieces  # the sentence boundaries of evidence selection and checking
from ..verify import correction_notes

HIGHLIGHT_MIN = 0.35  # share of bigrams a passage sentence must share with the answer to be marked
CURSOR = '<span class="rag-cursor">▍</span>'


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def source_id(turn: str, n: int) -> str:
    return f"rag-{turn}-src-{n}"


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
    return [s for s in sentence_pieces(answer_text) if n in numbers_in(s)]


def highlight_passage(passage: str, claims: list[str]) -> str:
    """Escaped passage with the sentences that best support `claims` wrapped in <mark>."""
    sentences = sentence_pieces(passage)
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


def _sources(title: str, numbered, turn: str, show_scores: bool) -> str:
    """A titled list of source entries with nothing marked (passages no answer sentence cites)."""
    return (f'<div class="rag-sources"><div class="rag-sources-title">{title}</div>'
            + "".join(render_source(n, h, turn, [], show_scores) for n, h in numbered) + "</div>")


def render_evidence(evidence, turn: str) -> str:
    """依据: the selected sentences, cited, on screen before the model writes anything."""
    if not evidence:
        return ""
    items = "".join(f'<li><a class="rag-cite" href="#{source_id(turn, e.n)}">[{e.n}]</a> {esc(e.shown)} '
                    f'<span class="rag-dim">{esc(e.source)}:{e.line}</span></li>' for e in evidence)
    return f'<div class="rag-evidence"><div class="rag-sources-title">依据</div><ul>{items}</ul></div>'


def render_notes(answer) -> str:
    """What checking changed (rag.verify.correction_notes), in one note under the answer."""
    notes = correction_notes(answer, "zh")
    if not notes:
        return ""
    corrected = answer.checked is not None and answer.checked.corrected
    return f'<div class="rag-note">{"引用已核对" if corrected else "已核对"}：{esc("；".join(notes))}</div>'


def render_timings(answer, model: str) -> str:
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
            body += _sources("最接近的资料（未用于回答）", enumerate(hits, 1), turn, show_scores)
        return f'<div class="rag-answer">{body}{render_timings(answer, model)}</div>'
    cited = answer.sources
    cited_nums = {n for n, _ in cited}
    body = (render_evidence(answer.evidence, turn)
            + f'<div class="rag-text">{render_answer_text(answer.text, len(hits), turn)}</div>' + render_notes(answer))
    body += f'<div class="rag-sources"><div class="rag-sources-title">来源 · {len(cited)} 段资料</div>'
    if not cited:
        body += '<div class="rag-warn">回答中的内容无法对应到检索到的资料，请对照下面的段落自行核实。</div>'
    body += "".join(render_source(n, h, turn, claims_for(answer.text, n), show_scores) for n, h in cited)
    rest = [(i, h) for i, h in enumerate(hits, 1) if i not in cited_nums]
    if rest:
        body += (f'<details class="rag-more"><summary>其余 {len(rest)} 段检索结果（未被引用）</summary>'
                 + "".join(render_source(i, h, turn, [], show_scores) for i, h in rest) + "</details>")
    body += "</div>"
    return f'<div class="rag-answer">{body}{render_timings(answer, model)}</div>'


def render_streaming(text: str, hits: list, turn: str, show_scores: bool = False, evidence=()) -> str:
    """The evidence, then the answer so far, above the retrieved passages: they are readable while the
    model reads them too, and [n] links work before the answer is finished. The final render replaces this."""
    body = render_evidence(evidence, turn) + (
        f'<div class="rag-text">{render_answer_text(text, len(hits), turn)}{CURSOR}</div>' if text
        else render_wait("正在阅读资料并生成回答…"))
    if hits:
        body += _sources(f"检索到 {len(hits)} 段资料", enumerate(hits, 1), turn, show_scores)
    return f'<div class="rag-answer rag-streaming">{body}</div>'


def render_wait(message: str) -> str:
    return f'<div class="rag-wait"><span class="rag-spinner"></span>{esc(message)}</div>'


def render_error(message: str) -> str:
    return f'<div class="rag-error">⚠ {esc(message)}</div>'


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


_TURN_ID = re.compile(r'id="rag-([0-9a-f]{8})-src-\d+"')


def answer_id_in(value) -> str | None:
    """Feedback id of a rendered answer ("ui-<turn>", as recorded by the chat tab): its turn id is in
    the ids of its source entries. None for anything else (the retrieval note, an error, a stop).
    gradio's like event hands back only the message content, so the id is read from it."""
    if isinstance(value, dict):
        value = message_text(value) if "content" in value else value.get("text", "")
    elif isinstance(value, list):
        value = message_text({"content": value})
    m = _TURN_ID.search(str(value or ""))
    return f"ui-{m.group(1)}" if m else None


def retrieval_message(question: str, query: str, retrieval) -> dict:
    """A collapsed 'thought' message showing what was actually searched."""
    rewritten = query.strip() != question.strip()
    translated = bool(getattr(retrieval, "translation", None))
    how = " · 英文问题加上中文译文检索" if translated else " · 追问已改写为独立问题"
    title = f"🔎 检索了 {len(retrieval.hits)} 段资料" + (how if rewritten else "")
    lines = [f'<div><b>检索查询：</b>{esc(query)}</div>']
    if rewritten:
        lines.append(f'<div class="rag-dim">原问题：{esc(question)}</div>')
    lines.append(f'<div class="rag-dim">关键词覆盖 {retrieval.best_coverage:.2f} · 最高向量相似度 '
                 f'{retrieval.best_dense:.3f} · {"资料覆盖此问题" if retrieval.covered else "资料未覆盖此问题"}</div>')
    return {"role": "assistant", "content": "".join(lines), "metadata": {"title": esc(title), "status": "done"}}


# ---------------------------------------------------------------- status and documents

def render_status(kind: str, message: str, title: str = "") -> str:
    """The status pill in the header; kind is ok | busy | err."""
    attr = f' title="{esc(title)}"' if title else ""
    return f'<div class="rag-status {kind}"{attr}><span class="dot"></span>{esc(message)}</div>'


STATUS_LABELS = {
    DocStatus.INDEXED: "已索引", DocStatus.MODIFIED: "已修改，待重新索引", DocStatus.NOT_INDEXED: "未索引",
    DocStatus.DELETED: "已删除，待重新索引", DocStatus.UNREADABLE: "无法读取",
}


def status_label(doc: Document) -> str:
    return f"跳过：{doc.reason}" if doc.status is DocStatus.SKIPPED else STATUS_LABELS[doc.status]


def document_rows(docs: list[Document]) -> list[list]:
    """The documents table: name, size, chunks, last indexed, status."""
    return [[d.source, f"{d.size / 1024:.1f} KB", "—" if d.chunks is None else d.chunks,
             d.indexed_at.replace("T", " ") or "—", status_label(d)] for d in docs]


def render_doc_message(message: str, kind: str = "info") -> str:
    """The result box above the documents table; kind is info | ok | warn | err."""
    if not message:
        return ""
    return f'<div class="rag-doc-msg {kind}">{"<br>".join(esc(x) for x in message.splitlines())}</div>'


def build_summary(report) -> str:
    """A rag.index.BuildReport in one paragraph (plus one line per skipped file)."""
    if report.up_to_date:
        text = f"索引已是最新（{report.chunks} 段，{len(report.unchanged)} 个文档，{report.seconds:.2f} s）。"
    else:
        text = (f"索引已更新：新增 {len(report.added)}、修改 {len(report.changed)}、删除 {len(report.removed)}、"
                f"未变 {len(report.unchanged)} 个文档；嵌入 {report.embedded} 段，共 {report.chunks} 段，"
                f"用时 {report.seconds:.1f} s。")
    for source, reason in report.skipped:
        text += f"\n跳过 {source}：{reason}"
    return text
