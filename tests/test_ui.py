"""Chat UI: rendering and document handling (pure), then the launched app through gradio_client (fake models)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SAMPLE_MD, pick_free_port, write_sample_corpus
from rag.fakes import FakeEmbedder, FakeGenerator

EVIL_MD = """# 注入测试

1. 什么是注入攻击?
注入攻击 <img src=x onerror="window.__pwned=1"> 会执行 <script>window.__pwned=2</script> 代码，[点我](javascript:alert(1)) ![图](http://example.com/x.png)。
"""


class RewritingFakeGenerator(FakeGenerator):
    """Also answers the follow-up rewrite prompt, with a fixed stand-alone question."""

    def __init__(self, rewrite: str):
        super().__init__()
        self.rewrite = rewrite

    def stream(self, messages, max_tokens=256, prefix=""):
        from rag import prompts

        if messages[0]["content"] == prompts.REWRITE_SYSTEM:
            self.prompts.append(messages)
            yield self.rewrite
            return
        yield from super().stream(messages, max_tokens, prefix)


# ---------------------------------------------------------------- rendering

def _hit(text, source="notes.md", heading="测试的时候要用 Dropout 吗?", line=7):
    from rag.chunking import Chunk
    from rag.retriever import Hit

    return Hit(Chunk("c1", source, heading, text, 10, 10 + len(text), line, "0" * 64), 0.03, 0.91, 7.5, 0.6)


def _answer(text, hits, abstained=False):
    from rag.assistant import Answer
    from rag.citations import check_citations

    checked = None if abstained else check_citations(text, [h.chunk.embed_text() for h in hits])
    return Answer("q", "q", checked.text if checked else text, hits, abstained, checked, {"retrieval": 0.01, "total": 0.2})


def test_citations_link_to_source_entries_with_position_and_highlight():
    from rag.ui.render import render_answer

    hits = [_hit("不需要。Dropout 只在训练过程中随机丢弃神经元，测试时关闭 Dropout。"), _hit("别的内容。", "grad.txt", "", 3)]
    out = render_answer(_answer("测试时关闭 Dropout，使用完整网络 [1]。", hits), "t1", show_scores=True)
    assert '<a class="rag-cite" href="#rag-t1-src-1"' in out
    assert '<details class="rag-src" id="rag-t1-src-1">' in out
    assert "notes.md" in out and "第 7 行" in out and "字符 10–" in out and "测试的时候要用 Dropout 吗?" in out
    assert "<mark>" in out and "测试时关闭 Dropout。</mark>" in out
    assert "RRF 0.0300" in out and "向量 0.910" in out
    assert "其余 1 段检索结果" in out and 'id="rag-t1-src-2"' in out  # uncited passage still checkable


def test_document_and_model_text_is_escaped():
    from rag.ui.render import render_answer, render_streaming

    evil = EVIL_MD.split("\n", 3)[3]
    hits = [_hit(evil, source='<b onmouseover="x">evil</b>.md', heading="<script>alert(1)</script>")]
    out = render_answer(_answer(evil + " [1]", hits), "t1") + render_streaming(evil + "[1]", hits, "t1")
    for bad in ("<script", "<img", "<b ", 'href="javascript', "onerror=\""):
        assert bad not in out, bad
    # the only links are our citations; markdown syntax stays inert text (the chatbot renders no markdown)
    assert out.count("<a ") == out.count('<a class="rag-cite" href="#rag-t1-src-')
    assert "&lt;script&gt;" in out and "&lt;img" in out


def test_invalid_citation_numbers_are_not_links():
    from rag.ui.render import render_answer_text

    out = render_answer_text("结论 [1][7]", 2, "t")
    assert out.count("rag-cite") == 1 and "[7]" in out


def test_abstained_answer_shows_closest_passages():
    from rag.ui.render import render_answer

    out = render_answer(_answer("资料库中没有找到能回答这个问题的内容", [_hit("无关内容。")], abstained=True), "t2")
    assert "最接近的资料" in out and 'id="rag-t2-src-1"' in out and "rag-cite" not in out


def test_passages_are_shown_while_the_answer_streams():
    from rag.ui.render import render_streaming

    hits = [_hit("不需要。"), _hit("别的内容。", "grad.txt")]
    waiting = render_streaming("", hits, "t")
    assert "rag-wait" in waiting and 'id="rag-t-src-1"' in waiting and 'id="rag-t-src-2"' in waiting
    partial = render_streaming("不需要 [2", hits, "t")
    assert "rag-cursor" in partial and "rag-cite" not in partial  # an unfinished "[2" is not a link yet
    assert 'href="#rag-t-src-2"' in render_streaming("不需要 [2]", hits, "t")


def test_stopped_answer_is_flagged_unfinished():
    from rag.ui.render import mark_stopped, render_streaming, render_wait

    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "text", "text": render_streaming("半句回答 [1", [_hit("资料。")], "t")}]}]
    out = mark_stopped(chat)
    assert "已停止生成" in out[-1]["content"] and "rag-cursor" not in out[-1]["content"]
    assert "已停止" in mark_stopped([{"role": "assistant", "content": render_wait("正在检索资料…")}])[-1]["content"]
    done = [{"role": "assistant", "content": "<div class=\"rag-answer\">完整</div>"}]
    assert mark_stopped(done) == done


def test_sentences_round_trip():
    from rag.evidence import sentence_pieces as split_sentences  # what rag.ui.render highlights by

    for text in ["", "a", "第一句。第二句！\n\nThird one. Fourth?  tail", "1.5 倍。e.g. x"]:
        assert "".join(split_sentences(text)) == text


def test_highlights_fall_on_the_citation_checkers_sentence_boundaries():
    from rag.evidence import sentence_pieces
    from rag.ui.render import highlight_passage

    passage = "学习率为 1.5 倍时 e.g. Adam 会震荡。其他内容在这里。"
    marked = highlight_passage(passage, ["学习率为 1.5 倍时 e.g. Adam 会震荡 [1]。"])
    pieces = sentence_pieces(passage)
    marks = re.findall(r"<mark>(.*?)</mark>", marked)
    assert marks and all(m in pieces for m in marks) and "其他内容在这里。" not in marks
    assert re.sub(r"</?mark>", "", marked) == passage


def test_correction_notes_one_wording_for_page_and_terminal():
    from rag.citations import CheckedAnswer
    from rag.ui.render import render_notes
    from rag.verify import Verdict, VerifiedAnswer, correction_notes

    ans = _answer("结论 [1]。", [_hit("结论。")])
    assert correction_notes(ans) == [] and render_notes(ans) == ""
    ans.checked = CheckedAnswer("结论 [1]。", [1], removed=[4], attached=[1], replaced=[(2, 1)])
    assert correction_notes(ans, "en") == ["removed citations of passages that were not retrieved: [4]",
                                           "re-pointed citations the cited passage did not support: [2]→[1]",
                                           "added citations to uncited sentences: [1]"]
    note = render_notes(ans)
    assert note.startswith('<div class="rag-note">引用已核对：') and "删除了指向不存在资料的引用 [4]" in note
    assert "更正了引用 [2]→[1]" in note and "补充了引用 [1]" in note
    ans.checked = CheckedAnswer("结论 [1]。", [1])
    ans.verified = VerifiedAnswer("结论 [1]。", [Verdict("x", "unsupported")])
    assert render_notes(ans).startswith('<div class="rag-note">已核对：删除了 1 句资料不支持的内容')


def test_document_rows_render_status_data():
    from rag.corpus import DocStatus, Document
    from rag.ui.render import document_rows, render_doc_message, render_status

    docs = [Document("a.md", 2048, DocStatus.INDEXED, 3, "2026-01-02T03:04:05"),
            Document("b.md", 10, DocStatus.SKIPPED, reason="no text"),
            Document("c.md", 512, DocStatus.DELETED, 1, "2026-01-01T00:00:00")]
    assert document_rows(docs) == [["a.md", "2.0 KB", 3, "2026-01-02 03:04:05", "已索引"],
                                   ["b.md", "0.0 KB", "—", "—", "跳过：no text"],
                                   ["c.md", "0.5 KB", 1, "2026-01-01 00:00:00", "已删除，待重新索引"]]
    assert render_doc_message("") == ""
    assert render_doc_message("<b>x</b>\ny", "err") == '<div class="rag-doc-msg err">&lt;b&gt;x&lt;/b&gt;<br>y</div>'
    assert render_status("ok", "就绪 <x>", title="m").startswith('<div class="rag-status ok" title="m">')
    assert "&lt;x&gt;" in render_status("ok", "就绪 <x>")


def test_build_summary_and_feedback_ids():
    from rag.index import BuildReport
    from rag.ui.render import answer_id_in, build_summary, render_answer

    assert build_summary(BuildReport(unchanged=["a"], chunks=4)).startswith("索引已是最新（4 段，1 个文档")
    text = build_summary(BuildReport("g2", added=["a"], skipped=[("b.pdf", "encrypted")], chunks=4, embedded=4))
    assert "新增 1" in text and text.endswith("跳过 b.pdf：encrypted")
    html = render_answer(_answer("结论 [1]。", [_hit("结论。")]), "0123abcd")
    assert answer_id_in(html) == "ui-0123abcd" and answer_id_in({"content": html}) == "ui-0123abcd"
    assert answer_id_in("<div>x</div>") is None


# ---------------------------------------------------------------- documents

@pytest.mark.parametrize("name", ["../x.md", "a/b.md", "..\\x.md", ".hidden.md", "x.exe", "noext", "", "x\x00.md",
                                  "..", "a\nb.md", "x" * 250 + ".md"])
def test_upload_names_with_path_tricks_or_bad_types_are_rejected(name):
    from rag.errors import CorpusError
    from rag.corpus import safe_document_name

    with pytest.raises(CorpusError):
        safe_document_name(name)


def test_save_upload_limits(tmp_path):
    from rag.errors import CorpusError
    from rag.corpus import MAX_UPLOAD_BYTES, save_upload

    corpus = tmp_path / "corpus"
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(CorpusError, match="过大"):
        save_upload(corpus, big)
    blank = tmp_path / "blank.md"
    blank.write_text("   \n", encoding="utf-8")
    with pytest.raises(CorpusError):
        save_upload(corpus, blank)
    ok = tmp_path / "新笔记.md"
    ok.write_text(SAMPLE_MD, encoding="utf-8")
    assert save_upload(corpus, ok) == ("新笔记.md", False)
    assert save_upload(corpus, ok) == ("新笔记.md", True)
    assert sorted(p.name for p in corpus.iterdir()) == ["新笔记.md"]  # no temp files left


def test_delete_only_listed_documents_and_never_the_last(tmp_path, corpus):
    from rag.errors import CorpusError
    from rag.corpus import delete_document

    (tmp_path / "outside.md").write_text("x", encoding="utf-8")
    for bad in ["../outside.md", "missing.md", str(tmp_path / "outside.md")]:
        with pytest.raises(CorpusError):
            delete_document(corpus, bad)
    delete_document(corpus, "grad.txt")
    assert not (corpus / "grad.txt").exists() and (tmp_path / "outside.md").exists()
    with pytest.raises(CorpusError, match="最后一个"):
        delete_document(corpus, "notes.md")


def test_model_choice_is_limited_to_installed_generators(settings):
    from rag.errors import ModelNotInstalled
    from rag.ui import Backend, installed_generators

    backend = Backend(settings, embedder=FakeEmbedder(), generator=FakeGenerator())
    specs = [spec for _, spec in installed_generators(settings.generator)]
    assert specs[0] == "fake" and all(s.startswith("packaged:") for s in specs[1:])
    for bad in ["/etc/passwd", "packaged:all-minilm-l6-v2", "Qwen/Qwen2.5-1.5B-Instruct"]:
        with pytest.raises(ModelNotInstalled):
            backend.switch_model(bad)
    assert backend.model == "fake"
    if len(specs) > 1:  # no model is loaded here: switching only swaps the (lazy) assistant
        backend.switch_model(specs[1])
        assert backend.model == specs[1] and not backend.is_ready()
        backend.switch_model("fake")
        assert backend.is_ready() and backend.assistant.generator.model_id == "fake"


# ---------------------------------------------------------------- the launched app (gradio_client)


def _launch(tmp: Path, api: bool, generator=None):
    from rag.config import Settings
    from rag.ui import launch

    corpus = tmp / "corpus"
    write_sample_corpus(corpus)
    settings = Settings(corpus_dir=corpus, index_dir=tmp / "index", cache_dir=tmp / "cache",
                        embedder="fake", generator="fake")
    return launch(settings, port=pick_free_port(), api=api, embedder=FakeEmbedder(),
                  generator=generator or FakeGenerator(), block=False, quiet=True), settings


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    gen = RewritingFakeGenerator("学习率过小会怎样?")
    demo, settings = _launch(tmp_path_factory.mktemp("ui"), api=True, generator=gen)
    yield demo, settings, gen
    demo.close()


@pytest.fixture
def client(app):
    from gradio_client import Client

    return Client(app[0].local_url, verbose=False)


def _ask(client, question, k=3):
    job = client.submit(question, [], k, False, api_name="/ask")
    outputs = list(job)  # every streamed update
    return outputs, job.result(timeout=60)


def _text(message) -> str:
    """Message content as a string (gradio 6 returns a list of {"type": "text", "text": ...} parts)."""
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def _last_answer(chat) -> str:
    return _text(chat[-1])


def test_ask_streams_an_answer_with_citation_and_sources(client):
    outputs, chat = _ask(client, "测试的时候要用 Dropout 吗?")
    assert len(outputs) >= 4  # waiting, retrieved, several token updates, done
    assert any("rag-streaming" in str(o) for o in outputs)
    # 依据: the evidence is on screen in the first update after retrieval, before any answer text
    first = next(str(o) for o in outputs if "rag-streaming" in str(o))
    assert "rag-evidence" in first and "依据" in first and "rag-cursor" not in first
    answer = _last_answer(chat)
    assert re.search(r'<a class="rag-cite" href="#rag-\w+-src-1"', answer)
    assert "rag-sources" in answer and 'class="rag-src"' in answer and "notes.md" in answer
    assert "<mark>" in answer
    thought = chat[-2]
    assert thought["metadata"]["title"].startswith("🔎") and "Dropout" in _text(thought)


def test_follow_up_is_rewritten_with_history(client, app):
    _ask(client, "学习率太大会怎样?")
    _, chat = _ask(client, "那太小呢?")
    rewrite_prompt = app[2].prompts[-2][-1]["content"]
    assert "学习率太大会怎样?" in rewrite_prompt and "那太小呢?" in rewrite_prompt
    thought = chat[-2]
    assert "追问已改写" in thought["metadata"]["title"]
    assert "学习率过小会怎样?" in _text(thought) and "那太小呢?" in _text(thought)
    assert "rag-cite" in _last_answer(chat)


def test_question_outside_the_corpus_says_so(client):
    _, chat = _ask(client, "量子色动力学中的渐近自由是什么")
    answer = _last_answer(chat)
    assert "没有找到" in answer and "最接近的资料" in answer and "rag-cite" not in answer


def test_upload_indexes_the_file_and_rejects_bad_ones(client, app, tmp_path):
    from gradio_client import handle_file

    _, settings, _ = app
    new = tmp_path / "优化器.md"
    new.write_text("# 优化器\n\n1. Adam 优化器有什么特点?\nAdam 结合了动量和自适应学习率，对每个参数单独调整步长。\n",
                   encoding="utf-8")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    msg, table, _, _, _ = client.predict([handle_file(str(new)), handle_file(str(broken))], api_name="/upload_documents")
    assert (settings.corpus_dir / "优化器.md").read_text(encoding="utf-8") == new.read_text(encoding="utf-8")
    assert not (settings.corpus_dir / "broken.pdf").exists()
    assert "已添加 优化器.md" in msg and "broken.pdf：无法读取" in msg and "索引已更新" in msg
    row = next(r for r in table["data"] if r[0] == "优化器.md")
    assert row[4] == "已索引" and int(row[2]) >= 1
    _, chat = _ask(client, "Adam 优化器有什么特点?")
    assert "优化器.md" in _last_answer(chat) and "rag-cite" in _last_answer(chat)

    exe = tmp_path / "payload.exe"
    exe.write_bytes(b"MZ\x00\x00")
    with pytest.raises(Exception, match="Invalid file type"):  # gradio's own type check, before ours
        client.predict([handle_file(str(exe))], api_name="/upload_documents")
    assert not (settings.corpus_dir / "payload.exe").exists()


def test_delete_removes_the_document_from_corpus_and_index(client, app):
    _, settings, _ = app
    msg, table, _, _ = client.predict("grad.txt", True, api_name="/delete_document")
    assert not (settings.corpus_dir / "grad.txt").exists()
    assert "已从资料库删除 grad.txt" in msg
    assert "grad.txt" not in [r[0] for r in table["data"]]
    _, chat = _ask(client, "梯度爆炸怎么缓解?", k=5)
    assert "grad.txt" not in _last_answer(chat)
    msg, _, _, _ = client.predict("../notes.md", True, api_name="/delete_document")
    assert "没有这个文档" in msg


def test_api_is_closed_and_local_files_are_not_served_by_default(tmp_path):
    import httpx
    from gradio_client import Client

    demo, settings = _launch(tmp_path, api=False)
    try:
        url = demo.local_url.rstrip("/")
        info = Client(demo.local_url, verbose=False).view_api(print_info=False, return_format="dict")
        assert info["named_endpoints"] == {} and info["unnamed_endpoints"] == {}
        assert httpx.post(f"{url}/gradio_api/api/ask", json={"data": ["x", [], 3, False]}).status_code == 404
        for path in [settings.corpus_dir / "notes.md", settings.corpus_dir.parent / "index" / "CURRENT",
                     Path(__file__)]:
            r = httpx.get(f"{url}/gradio_api/file={path.resolve()}")
            assert r.status_code in (403, 404), (path, r.status_code)
        page = httpx.get(url).text
        assert "fonts.googleapis.com" not in page
    finally:
        demo.close()
