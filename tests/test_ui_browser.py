"""End to end in a real browser: headless Chromium asks, watches the answer stream, opens a citation.

Fake models by default (seconds). RAG_UI_E2E_REAL=1 runs the real models on ./corpus and ./index and
records the time to first token as the user sees it (test-artifacts/ui_ttft.json).
Needs Chromium (Debian's /usr/bin/chromium, or CHROMIUM_PATH) and the `playwright` package:
`bash .ci/install-browser.sh` installs both.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from conftest import ROOT, pick_free_port, write_sample_corpus
from rag.fakes import FakeEmbedder, FakeGenerator
from test_ui import EVIL_MD

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
REAL = os.environ.get("RAG_UI_E2E_REAL") == "1"
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="python package `playwright` not installed "
                       "(bash .ci/install-browser.sh)"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (bash .ci/install-browser.sh)"),
]
if REAL:
    pytestmark.append(pytest.mark.slow)



@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from rag.config import Settings
    from rag.ui import launch

    if REAL:
        demo = launch(Settings.from_env(corpus_dir=ROOT / "corpus", index_dir=ROOT / "index"),
                      port=pick_free_port(), block=False, quiet=True)
    else:
        tmp = tmp_path_factory.mktemp("ui-e2e")
        corpus = tmp / "corpus"
        write_sample_corpus(corpus)
        (corpus / "evil.md").write_text(EVIL_MD, encoding="utf-8")
        settings = Settings(corpus_dir=corpus, index_dir=tmp / "index", cache_dir=tmp / "cache",
                            embedder="fake", generator="fake")
        demo = launch(settings, port=pick_free_port(), embedder=FakeEmbedder(), generator=FakeGenerator(),
                      block=False, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def page(app_url, tmp_path_factory):
    outside = []
    with sync_playwright() as p:
        # a fresh profile every run (playwright passes it as --user-data-dir)
        browser = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        pg = browser.pages[0] if browser.pages else browser.new_page()
        pg.on("request", lambda r: outside.append(r.url)
              if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        pg.goto(app_url)
        pg.wait_for_selector("#rag-input textarea")
        pg.outside_requests = outside
        yield pg
        browser.close()


FIRST_TEXT = """() => { const t = document.querySelectorAll('#rag-chat .rag-text');
  return t.length > %d && t[t.length - 1].textContent.trim().length > 0; }"""
DONE = """() => document.querySelectorAll('#rag-chat .rag-answer:not(.rag-streaming)').length > %d
  && !document.querySelector('#rag-chat .rag-wait')"""


def ask(page, question: str, timeout_s: float) -> tuple[float, float]:
    """Type a question, press Enter; (seconds to first answer text, seconds to the finished answer)."""
    before = page.locator("#rag-chat .rag-answer:not(.rag-streaming)").count()
    page.fill("#rag-input textarea", question)
    t0 = time.perf_counter()
    page.press("#rag-input textarea", "Enter")
    page.wait_for_function(FIRST_TEXT % before, timeout=timeout_s * 1000, polling=50)
    first = time.perf_counter() - t0
    page.wait_for_function(DONE % before, timeout=timeout_s * 1000)
    return first, time.perf_counter() - t0


def test_ask_stream_and_open_a_citation(page):
    question = "测试的时候要用 Dropout 吗?"
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_selector(".rag-status.ok", timeout=(900 if REAL else 60) * 1000)  # models loaded
    first, total = ask(page, question, 600 if REAL else 60)
    answer = page.locator("#rag-chat .rag-answer").last
    cite = answer.locator("a.rag-cite").first
    assert cite.count() == 1, answer.inner_html()
    target = cite.get_attribute("href")[1:]
    source = page.locator(f"details#{target}")
    assert source.get_attribute("open") is None  # collapsed until the citation is clicked
    cite.click()
    page.wait_for_function(f"() => document.getElementById('{target}').open")
    assert source.locator(".rag-passage").is_visible()
    assert "Dropout" in source.locator(".rag-passage").inner_text() or REAL
    assert source.locator(".rag-file").inner_text().strip()
    assert "行" in source.locator(".rag-pos").inner_text()
    page.wait_for_timeout(400)  # let the smooth scroll settle for the picture
    page.screenshot(path=str(ARTIFACTS / ("ui-answer-real.png" if REAL else "ui-answer.png")))
    assert page.outside_requests == []  # nothing leaves the machine (fonts, analytics, CDNs)
    if REAL:
        (ARTIFACTS / "ui_ttft.json").write_text(json.dumps(
            {"question": question, "first_token_s": round(first, 2), "answer_s": round(total, 2)}, ensure_ascii=False))
        print(f"\nUI time to first token {first:.2f}s, full answer {total:.2f}s")


@pytest.mark.skipif(REAL, reason="injection document only exists in the fake-model corpus")
def test_html_in_documents_does_not_execute(page):
    ask(page, "什么是注入攻击?", 60)
    answer = page.locator("#rag-chat .rag-answer").last
    text = answer.evaluate("e => e.textContent")  # collapsed sources included
    assert "evil.md" in text and "<img src=x" in text and "<script>" in text  # shown as text
    assert answer.locator("img, script, a:not(.rag-cite)").count() == 0
    assert page.evaluate("() => window.__pwned") is None


@pytest.mark.skipif(REAL, reason="does not add documents to the real corpus")
def test_upload_in_documents_tab(page, tmp_path):
    f = tmp_path / "上传测试.md"
    f.write_text("# 上传\n\n1. 什么是早停?\n早停在验证集损失不再下降时停止训练，防止过拟合。\n", encoding="utf-8")
    page.get_by_role("tab", name="文档").click()
    page.locator("#rag-upload input[type=file]").set_input_files(str(f))
    page.wait_for_function("() => document.querySelector('#rag-docs') && "
                           "document.querySelector('#rag-docs').innerText.includes('上传测试.md')", timeout=60_000)
    page.wait_for_selector("text=索引已更新", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "ui-documents.png"))
    page.get_by_role("tab", name="问答").click()
    ask(page, "什么是早停?", 60)
    assert "上传测试.md" in page.locator("#rag-chat .rag-answer").last.evaluate("e => e.textContent")
    assert "4 个文档" in page.locator("#rag-status-box").inner_text()
