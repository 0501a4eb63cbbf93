"""The gradio app: header with the status pill, one builder per tab, and launch().

Safety model. Everything a document or the model wrote is HTML-escaped (rag.ui.render) before it
reaches the page; the chatbot shows our HTML as is (render_markdown=False, so document text cannot turn
into markdown links or images) and gradio's sanitizer runs on top of it as a second layer. The server
binds to 127.0.0.1, never makes a share link, serves no local files (corpus, index and model cache are
blocked), keeps its API closed unless `api=True`, and runs one LLM job at a time behind a bounded queue.
Gradio itself is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import MAX_PASSAGES, Settings, label_zh
from ..corpus import MAX_UPLOAD_BYTES
from ..errors import CorpusError, RagError
from . import chat, docs
from .backend import QUEUE_SIZE, Backend, installed_generators

log = logging.getLogger(__name__)

# Browser sessions whose state (conversation) gradio keeps, oldest evicted first. Its default of
# 10000 costs ~0.2 MB each: a long-running server grew without bound (eval/results/soak.md).
SESSIONS = 256
STATIC = Path(__file__).parent / "static"
CSS = (STATIC / "ui.css").read_text(encoding="utf-8")
HEAD = f"<script>\n{(STATIC / 'ui.js').read_text(encoding='utf-8')}</script>"  # [n] links; open sources stay open


def theme():
    import gradio as gr

    # System fonts only: the default theme pulls web fonts from the internet, which this app must never do.
    sans = ["system-ui", "-apple-system", "Segoe UI", "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC",
            "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=sans,
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def settings_tab(backend) -> dict:
    """The 设置 tab: passages per question and score chips (per session), the model (global)."""
    import gradio as gr

    settings = backend.settings
    (k_label, k_info), (m_label, m_info) = label_zh("top_k"), label_zh("generator")
    c = {"k": gr.Slider(1, MAX_PASSAGES, value=settings.top_k, step=1, label=k_label, info=k_info),
         "show_scores": gr.Checkbox(label="在来源中显示检索分数（RRF、向量相似度、BM25、关键词覆盖）", value=False),
         "model": gr.Dropdown(label=m_label, choices=installed_generators(settings.generator),
                              value=backend.model, interactive=True, info=m_info)}
    gr.Markdown(f"嵌入模型 `{settings.embedder}` · 服务只监听本机，不创建公开链接，不联网。")
    return c


def _wire_status(demo, backend, status, timer, model, doc_outs) -> None:
    """The status pill polls while models load; switching the model starts loading it; a page load
    refreshes the model list and the documents table."""
    import gradio as gr

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
                gr.Dropdown(choices=installed_generators(backend.settings.generator), value=backend.model),
                *docs.outputs(backend))

    timer.tick(tick, None, [status, timer], queue=False, api_visibility="private", show_progress="hidden")
    model.input(change_model, [model], [status, timer, model], concurrency_limit=1, concurrency_id="llm",
                api_visibility="private")
    demo.load(on_load, None, [timer, model] + doc_outs, queue=False, api_visibility="private", show_progress="hidden")


def build_app(backend: Backend, api: bool = False):
    import gradio as gr

    visibility = "public" if api else "private"
    with gr.Blocks(title="深度学习面试笔记助手", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        turns = gr.State([])
        with gr.Row(elem_id="rag-header"):
            gr.HTML('<div><h1>深度学习面试笔记助手</h1><div class="sub">离线问答 · 每个回答都标注来源，点击 [n] 查看原文'
                    '</div></div>', scale=1)
            status = gr.HTML(backend.status_html(), elem_id="rag-status-box", scale=1)
        timer = gr.Timer(1.0, active=True)
        with gr.Tabs():
            with gr.Tab("问答", id="chat"):
                chat_c = chat.layout(backend)
            with gr.Tab("文档", id="docs"):
                docs_c = docs.layout(backend)
            with gr.Tab("设置", id="settings"):
                prefs = settings_tab(backend)
        chat.wire(backend, chat_c, turns, prefs["k"], prefs["show_scores"], visibility)
        doc_outs = docs.wire(backend, docs_c, status, visibility)
        _wire_status(demo, backend, status, timer, prefs["model"], doc_outs)
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
    from ..feedback import FeedbackStore, default_path

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
        theme=theme(), css=CSS, head=HEAD)
    return demo
