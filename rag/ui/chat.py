"""The 问答 tab: the chat, its input row and the feedback row; answers stream in as they are written."""

import logging
import uuid

from ..assistant import HISTORY_TURNS
from ..config import MAX_PASSAGES, MAX_QUERY_CHARS
from ..errors import RagError
from .backend import short_model
from .render import answer_id_in, esc, mark_stopped, render_answer, render_error, render_streaming, render_wait, \
    retrieval_message

log = logging.getLogger(__name__)

EXAMPLES = [
    "Batch Normalization 有什么作用？",
    "测试的时候要用 dropout 吗？",
    "如何缓解梯度消失问题？",
    "What is the trade-off between bias and variance?",
]


def start_turn(message, chat):
    """The question goes into the chat at once (escaped) and into `pending` for the streamed answer."""
    message = (message or "").strip()
    if not message:
        return "", chat or [], ""
    return "", (chat or []) + [{"role": "user", "content": esc(message)}], message


def _load_model(backend, assistant, chat: list):
    """Before the first answer: load the LLM with a message in the chat."""
    yield chat + [{"role": "assistant", "content": render_wait(
        f"正在加载语言模型 {short_model(backend.model)}，首次加载需要一点时间…")}]
    _ = assistant.generator
    backend.mark_ready(assistant.settings.generator)


def _events(backend, assistant, question: str, k: int, history: list):
    if backend.gate is not None:  # `rag serve`: the API's queue and stall watchdog apply here too
        return backend.gate.stream(lambda: assistant.ask(question, k, history=history), bounded=False)
    return assistant.ask(question, k, history=history)


def answer_turn(backend, question, chat, turns, k, show_scores):
    """Stream one answer into the chat. `turns` holds the plain (question, answer) history."""
    chat, turns = list(chat or []), list(turns or [])
    question = (question or "").strip()
    if not question:
        yield chat, turns
        return
    if not chat or chat[-1].get("role") != "user":
        chat.append({"role": "user", "content": esc(question)})
    turn, base, scores = uuid.uuid4().hex[:8], len(chat), bool(show_scores)
    try:
        assistant = backend.assistant
        if not backend.is_ready():
            for shown in _load_model(backend, assistant, chat):
                yield shown, turns
        chat.append({"role": "assistant", "content": render_wait("正在结合上文理解追问…" if turns else "正在检索资料…")})
        yield chat, turns
        hits, text, evidence = [], "", []
        k = min(max(int(k or backend.settings.top_k), 1), MAX_PASSAGES)  # the API is not bound by the slider
        for ev in _events(backend, assistant, question, k, turns):
            if ev.kind == "retrieved":
                hits, evidence = ev.retrieval.hits, ev.evidence
                chat = chat[:base] + [retrieval_message(question, ev.text, ev.retrieval), {
                    "role": "assistant", "content": render_streaming("", hits, turn, scores, evidence)}]
            elif ev.kind == "token":
                text += ev.text
                chat[-1] = {"role": "assistant", "content": render_streaming(text, hits, turn, scores, evidence)}
            elif ev.kind == "done":
                ans = ev.answer
                chat[-1] = {"role": "assistant", "content": render_answer(
                    ans, turn, scores, short_model(assistant.settings.generator))}
                turns = [*turns, (question, ans.text)][-HISTORY_TURNS:]  # all the rewriter reads
                if backend.feedback is not None:
                    backend.feedback.record_answer(f"ui-{turn}", ans, assistant.settings.generator, backend)
            yield chat, turns
    except RagError as e:
        yield chat[:base] + [{"role": "assistant", "content": render_error(str(e))}], turns
    except Exception as e:  # never a stack trace in the page
        log.exception("answer failed")
        yield chat[:base] + [{"role": "assistant", "content": render_error(
            f"内部错误（{type(e).__name__}），详情见服务端日志")}], turns


def rate_answer(backend, last, liked, value, notify):
    """👍/👎 on a rendered answer; returns the id rated last (for the correction box)."""
    answer_id = answer_id_in(value)
    if backend.feedback is None or answer_id is None or liked not in (True, False):
        return last
    try:
        backend.feedback.rate(answer_id, "up" if liked else "down", channel="ui")
    except RagError as e:
        notify.Warning(str(e))
        return last
    notify.Info("已记录 👍，谢谢" if liked else "已记录 👎：可以在下方写下正确的答案")
    return answer_id


def send_correction(backend, text, last, notify):
    text = (text or "").strip()
    if not text:
        return text
    if backend.feedback is None or not last:
        notify.Warning("先用 👎 标记要更正的回答")
        return text
    try:
        backend.feedback.rate(last, "down", text, channel="ui")
    except RagError as e:
        notify.Warning(str(e))
        return text
    notify.Info("更正已保存，会进入待审核的评测集")
    return ""


def layout(backend) -> dict:
    """The tab's components (inside an open gr.Tab)."""
    import gradio as gr

    c = {}
    c["chatbot"] = gr.Chatbot(
        elem_id="rag-chat", show_label=False, render_markdown=False, height="64vh",
        feedback_options=("Like", "Dislike") if backend.feedback is not None else None, buttons=[],
        layout="panel", group_consecutive_messages=True, examples=[{"text": q} for q in EXAMPLES],
        placeholder="<b>问我深度学习面试题</b><br>回答只依据资料库中的笔记，并标出每句话的来源。")
    with gr.Row(equal_height=True):
        c["msg"] = gr.Textbox(elem_id="rag-input", show_label=False, scale=8, lines=1, max_lines=6,
                              max_length=MAX_QUERY_CHARS, autofocus=True,
                              placeholder="输入问题，Enter 发送（支持中文或英文；可以追问）")
        c["send"] = gr.Button("发送", variant="primary", scale=1, min_width=80, elem_id="rag-send")
        c["stop"] = gr.Button("停止", variant="stop", scale=1, min_width=70)
        c["clear"] = gr.Button("新对话", scale=1, min_width=80)
    c["pending"] = gr.Textbox(visible=False)
    c["rated"] = gr.State("")  # id of the answer rated last, for the correction box
    with gr.Row(visible=backend.feedback is not None):
        c["correction"] = gr.Textbox(show_label=False, scale=8, lines=1, max_lines=4, max_length=4000,
                                     placeholder="回答有误？点 👎 后可以在这里写下正确的答案（可选）")
        c["correct_btn"] = gr.Button("提交更正", scale=1, min_width=80, size="sm")
    return c


def wire(backend, c: dict, turns, k, show_scores, visibility: str) -> None:
    """Events of the chat tab; k and show_scores come from the settings tab."""
    import gradio as gr

    # gradio injects event data by the annotation, so these small adapters carry the gradio types
    def answer(question, chat, turns, k, show_scores):
        yield from answer_turn(backend, question, chat, turns, k, show_scores)

    def rate(last, data: gr.LikeData):
        return rate_answer(backend, last, data.liked, data.value, gr)

    def correct(text, last):
        return send_correction(backend, text, last, gr)

    def pick_example(chat, evt: gr.SelectData):
        return start_turn(evt.value["text"] if isinstance(evt.value, dict) else str(evt.value), chat)

    chatbot, msg, pending, rated, correction = c["chatbot"], c["msg"], c["pending"], c["rated"], c["correction"]
    chat_in = dict(fn=start_turn, inputs=[msg, chatbot], outputs=[msg, chatbot, pending],
                   queue=False, api_visibility="private")
    ans = dict(fn=answer, inputs=[pending, chatbot, turns, k, show_scores], outputs=[chatbot, turns],
               concurrency_limit=1, concurrency_id="llm", show_progress="minimal")
    e1 = msg.submit(**chat_in).then(**ans, api_name="ask", api_visibility=visibility)
    e2 = c["send"].click(**chat_in).then(**ans, api_visibility="private")
    e3 = chatbot.example_select(pick_example, [chatbot], [msg, chatbot, pending], queue=False,
                                api_visibility="private").then(**ans, api_visibility="private")
    chatbot.like(rate, [rated], [rated], queue=False, api_visibility="private")
    c["correct_btn"].click(correct, [correction, rated], [correction], queue=False, api_visibility="private")
    correction.submit(correct, [correction, rated], [correction], queue=False, api_visibility="private")
    c["stop"].click(mark_stopped, [chatbot], [chatbot], cancels=[e1, e2, e3], queue=False, api_visibility="private")
    c["clear"].click(lambda: ([], [], ""), None, [chatbot, turns, msg], queue=False, cancels=[e1, e2, e3],
                     api_visibility="private")
    chatbot.clear(lambda: [], None, [turns], queue=False, cancels=[e1, e2, e3], api_visibility="private")
