"""The 文档 tab: the corpus table, upload, delete and re-index. rag.corpus does the work and raises
CorpusError; this module renders what it reports and runs the incremental build with a progress bar."""

from pathlib import Path

from ..corpus import MAX_UPLOAD_BYTES, UPLOAD_SUFFIXES, DocStatus, corpus_sources, delete_document, save_upload
from ..errors import CorpusError, RagError
from .render import build_summary, document_rows, render_doc_message


def outputs(backend, message: str = "", kind: str = "info") -> tuple:
    """(message box, table rows, names for the delete dropdown, header status): every docs event returns these."""
    import gradio as gr

    docs = backend.documents()
    names = [d.source for d in docs if d.status is not DocStatus.DELETED]
    return (render_doc_message(message, kind), document_rows(docs), gr.Dropdown(choices=names, value=None),
            backend.status_html())


def run_build(backend, progress, rebuild: bool = False) -> str:
    """The incremental build, its bars forwarded to this event's gr.Progress; a one-paragraph summary."""
    def listener(bar):
        if bar.total:
            progress((bar.n, bar.total), desc=bar.desc, unit=bar.unit or "steps")

    backend.tracker.local.listener = listener
    try:
        progress(0, desc="扫描文档")
        return build_summary(backend.assistant.build(rebuild=rebuild))
    finally:
        backend.tracker.local.listener = None


def upload(backend, files, progress) -> tuple:
    lines, saved = [], 0
    for f in files or []:
        path = Path(f if isinstance(f, str) else getattr(f, "path", None) or f.name)
        try:
            name, replaced = save_upload(backend.settings.corpus_dir, path)
            lines.append(f"{'已替换' if replaced else '已添加'} {name}")
            saved += 1
        except CorpusError as e:
            lines.append(f"未添加 — {e}")
        except OSError as e:
            lines.append(f"未添加 {path.name} — 无法保存（{e.strerror or e}）")
    kind = "ok" if saved and saved == len(files or []) else "warn"
    if saved:
        try:
            lines.append(run_build(backend, progress))
        except RagError as e:
            lines.append(f"重新索引失败：{e}")
            kind = "err"
    return *outputs(backend, "\n".join(lines) or "没有选择文件", kind), None


def delete(backend, source, confirmed, progress) -> tuple:
    if not source:
        return outputs(backend, "先在列表中选择要删除的文档", "warn")
    if not confirmed:
        return outputs(backend, "已取消删除", "info")
    try:
        delete_document(backend.settings.corpus_dir, source)
        return outputs(backend, f"已从资料库删除 {source}\n" + run_build(backend, progress), "ok")
    except RagError as e:
        return outputs(backend, str(e), "err")


def reindex(backend, rebuild, progress) -> tuple:
    try:
        return outputs(backend, run_build(backend, progress, bool(rebuild)), "ok")
    except RagError as e:
        return outputs(backend, str(e), "err")


def layout(backend) -> dict:
    """The tab's components (inside an open gr.Tab)."""
    import gradio as gr

    settings, c = backend.settings, {}
    gr.Markdown(f"资料库目录 `{settings.corpus_dir}`，索引目录 `{settings.index_dir}`。"
                f"上传的文件只按文件名保存到资料库目录，然后增量索引"
                f"（支持 txt、md、html、pdf，单个文件不超过 {MAX_UPLOAD_BYTES // 2**20} MB）。")
    c["msg"] = gr.HTML()
    c["table"] = gr.Dataframe(headers=["文档", "大小", "段落数", "最近索引", "状态"],
                              datatype=["str", "str", "str", "str", "str"], interactive=False,
                              wrap=True, elem_id="rag-docs")
    with gr.Row():
        with gr.Column(scale=3):
            c["files"] = gr.File(label="上传文档", file_count="multiple", file_types=list(UPLOAD_SUFFIXES),
                                 height=140, elem_id="rag-upload")
        with gr.Column(scale=2):
            # custom values allowed: another tab may have added files; delete_document() checks
            # every name against the corpus scan anyway
            c["pick"] = gr.Dropdown(label="删除文档", choices=list(corpus_sources(settings.corpus_dir)),
                                    value=None, interactive=True, allow_custom_value=True)
            c["confirm"] = gr.Checkbox(visible=False)
            c["delete"] = gr.Button("从资料库删除", variant="stop", size="sm")
            c["rebuild"] = gr.Checkbox(label="完全重建（重新嵌入全部段落）", value=False)
            c["reindex"] = gr.Button("重新索引", size="sm")
    return c


CONFIRM_JS = "(name, c) => [name, !!name && confirm('从资料库删除 “' + name + '”？\\n文件会从资料库目录移除，并重新索引。')]"


def wire(backend, c: dict, status, visibility: str) -> list:
    """Events of the documents tab; returns the components every docs event updates."""
    import gradio as gr

    # gr.Progress() as a default is how gradio hands an event its progress bar
    def on_upload(files, progress=gr.Progress()):
        return upload(backend, files, progress)

    def on_delete(source, confirmed, progress=gr.Progress()):
        return delete(backend, source, confirmed, progress)

    def on_reindex(rebuild, progress=gr.Progress()):
        return reindex(backend, rebuild, progress)

    outs = [c["msg"], c["table"], c["pick"], status]
    index_job = dict(concurrency_limit=1, concurrency_id="index", api_visibility=visibility)
    c["files"].upload(on_upload, [c["files"]], outs + [c["files"]], api_name="upload_documents", **index_job)
    c["delete"].click(on_delete, [c["pick"], c["confirm"]], outs, api_name="delete_document", js=CONFIRM_JS,
                      **index_job)
    c["reindex"].click(on_reindex, [c["rebuild"]], outs, api_name="reindex", **index_job)
    return outs
