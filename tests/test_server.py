"""`rag serve` through real clients: the official `openai` package (streaming and not), gradio_client
against the mounted UI, httpx for the edges (auth, limits, CORS, queue, watchdog). Fake models."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import pytest
from conftest import pick_free_port, write_sample_corpus
from rag.fakes import FakeEmbedder, ScriptedGenerator

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("gradio")

DROPOUT = "测试的时候要用 Dropout 吗?"
EVIL_ORIGINS = ["https://evil.example", "null", "http://127.0.0.1.evil.example"]



def _start(tmp, generator, **kw):
    from rag.assistant import Assistant
    from rag.config import Settings
    from rag.server import serve

    corpus = tmp / "corpus"
    write_sample_corpus(corpus)
    settings = Settings(corpus_dir=corpus, index_dir=tmp / "index", cache_dir=tmp / "cache",
                        embedder="fake", generator="fake")
    Assistant(settings, embedder=FakeEmbedder(), generator=generator).build()
    running = serve(settings, port=pick_free_port(), embedder=FakeEmbedder(), generator=generator, block=False,
                    quiet=True, feedback_db=tmp / "feedback.sqlite3", **kw)
    deadline = time.monotonic() + 30
    while not running.service.backend.is_ready():  # warm-up runs in the background
        assert time.monotonic() < deadline, running.service.backend.error
        time.sleep(0.05)
    return running


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gen = ScriptedGenerator(delay=0.01, rewrite="学习率过小会怎样?")
    running = _start(tmp_path_factory.mktemp("serve"), gen, gradio_api=True)
    yield running, gen
    running.close()


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A server with a short watchdog (stall 1 s, budget 3 s) and a model paced at 20 ms per piece."""
    gen = ScriptedGenerator(delay=0.02)
    running = _start(tmp_path_factory.mktemp("tight"), gen, stall=1.0, budget=3.0, ui=False)
    running.service.gate.grace = 0.5
    yield running, gen
    gen.unblock.set()
    running.close()


def _client(running, **kw):
    return openai.OpenAI(base_url=running.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def _http(running, **kw):
    return httpx.Client(base_url=running.url, timeout=30, **kw)


# ---------------------------------------------------------------- the openai client

def test_openai_client_gets_a_cited_answer_with_sources(server):
    running, _ = server
    r = _client(running).chat.completions.create(model="fake", messages=[{"role": "user", "content": DROPOUT}])
    text = r.choices[0].message.content
    assert "[1]" in text and r.choices[0].finish_reason == "stop" and r.id.startswith("chatcmpl-")
    extra = r.model_extra
    assert extra["abstained"] is False
    first = extra["sources"][0]
    assert set(first) >= {"n", "file", "line", "span", "heading", "text", "cited"}
    assert first["n"] == 1 and first["cited"] and first["file"] == "notes.md" and "Dropout" in first["heading"]
    src = (running.service.backend.settings.corpus_dir / "notes.md").read_text(encoding="utf-8")
    start, end = first["span"]
    assert first["text"].strip() in src and src[start:end].strip()  # the span points into the original file


def test_openai_client_streams_the_answer(server):
    running, _ = server
    chunks = list(_client(running).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": DROPOUT}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    # The answer streams a checked sentence at a time (the quote of the evidence, then each sentence the
    # contradiction check accepts), so a short answer is a few chunks, not one per token.
    assert len(chunks) >= 3 and "[1]" in text
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["answer"] and last.model_extra["sources"][0]["cited"]
    assert len({c.id for c in chunks}) == 1


def test_follow_up_is_rewritten_from_the_conversation(server):
    running, gen = server
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "学习率太大会怎样?"},
                {"role": "assistant", "content": "学习率过大时损失会震荡 [1]。"}, {"role": "user", "content": "那太小呢?"}]
    r = _client(running).chat.completions.create(model="fake", messages=messages)
    rewrite_prompt = gen.prompts[-2][-1]["content"]
    assert "学习率太大会怎样?" in rewrite_prompt and "那太小呢?" in rewrite_prompt
    assert r.model_extra["query"] == "学习率过小会怎样?" and "[1]" in r.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_declined_question_is_a_normal_completion_with_closest_passages(server, stream):
    running, _ = server
    q = [{"role": "user", "content": "量子色动力学中的渐近自由是什么"}]
    c = _client(running).chat.completions.create(model="fake", messages=q, stream=stream)
    if stream:
        chunks = list(c)
        text, extra = "".join(x.choices[0].delta.content or "" for x in chunks), chunks[-1].model_extra
    else:
        text, extra = c.choices[0].message.content, c.model_extra
    assert "没有找到" in text and extra["abstained"] is True
    assert extra["sources"] and not any(s["cited"] for s in extra["sources"])


def test_models_lists_the_installed_generators(server):
    running, _ = server
    ids = [m.id for m in _client(running).models.list()]
    assert ids[0] == "fake" and all(i.startswith("packaged:") for i in ids[1:])
    with pytest.raises(openai.NotFoundError):
        _client(running).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": DROPOUT}])


def test_retrieve_has_the_search_json_shape(server):
    running, _ = server
    with _http(running) as h:
        r = h.post("/v1/retrieve", json={"query": "梯度爆炸怎么缓解", "k": 3})
        assert r.status_code == 200
        body = r.json()
        a = running.service.backend.assistant
        expected = a.search("梯度爆炸怎么缓解", 3)
        assert body == json.loads(json.dumps({"query": expected.query, "covered": expected.covered,
                                              "results": [x.to_dict() for x in expected.hits]}))
        assert h.post("/v1/retrieve", json={"query": ""}).status_code == 400
        assert h.post("/v1/retrieve", json={"query": "x", "k": 0}).status_code == 400


def test_bad_requests_are_clear_400s(server):
    running, _ = server
    with _http(running) as h:
        for body in [{}, {"messages": []}, {"messages": [{"role": "assistant", "content": "x"}]},
                     {"messages": [{"role": "user", "content": "   "}]}, {"messages": "hi"},
                     {"messages": [{"role": "user", "content": "x" * 5000}]},
                     {"messages": [{"role": "user", "content": DROPOUT}], "stream": "yes"}]:
            r = h.post("/v1/chat/completions", json=body)
            assert r.status_code == 400 and r.json()["error"]["message"], body
        r = h.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert h.get("/v1/nothing").status_code == 404


# ---------------------------------------------------------------- the mounted UI

def test_gradio_ui_is_mounted_on_the_same_port(server):
    from gradio_client import Client

    running, _ = server
    client = Client(running.url + "/", verbose=False)
    job = client.submit(DROPOUT, [], 3, False, api_name="/ask")
    chat = job.result(timeout=60)
    answer = chat[-1]["content"]
    answer = answer if isinstance(answer, str) else "".join(p.get("text", "") for p in answer)
    assert 'class="rag-cite"' in answer and "notes.md" in answer
    assert running.service.gate.stats["served"] >= 1  # the UI's answer went through the shared gate
    config = client.config
    bot = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "rag-chat")
    assert bot["props"]["feedback_options"] == ["Like", "Dislike"]  # 👍/👎 on every answer


def test_ui_answers_are_recorded_for_feedback(server):
    from gradio_client import Client

    from rag.ui.render import answer_id_in

    running, _ = server
    chat = Client(running.url + "/", verbose=False).submit(DROPOUT, [], 3, False, api_name="/ask").result(timeout=60)
    answer_id = answer_id_in(chat[-1]["content"])  # what the 👍/👎 handler reads from the liked message
    assert answer_id and answer_id.startswith("ui-") and answer_id_in(chat[-2]["content"]) is None
    store = running.service.feedback
    store.rate(answer_id, "down", "测试时关闭 Dropout。", channel="ui")
    row = next(r for r in store.rows(-1) if r["id"] == answer_id)
    assert row["question"] == DROPOUT and row["channel"] == "ui" and row["correction"] == "测试时关闭 Dropout。"


# ---------------------------------------------------------------- feedback

def test_feedback_is_stored_and_becomes_a_draft_eval_item(server, tmp_path):
    from rag.feedback import FeedbackStore, export

    running, _ = server
    r = _client(running).chat.completions.create(model="fake", messages=[{"role": "user", "content": DROPOUT}])
    with _http(running) as h:
        ok = h.post("/v1/feedback", json={"id": r.id, "rating": "down", "correction": "测试时不用 Dropout。"})
        assert ok.status_code == 200 and ok.json()["rating"] == "down"
        assert h.post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": "up"}).status_code == 404
        assert h.post("/v1/feedback", json={"id": r.id, "rating": 5}).status_code == 400
    db = running.service.feedback.path
    rows = FeedbackStore(db).rows(rating=-1)  # a second connection: the rating is on disk
    row = next(x for x in rows if x["id"] == r.id)
    assert row["question"] == DROPOUT and row["model"] == "fake" and row["generation"]
    assert json.loads(row["retrieved"]) and row["correction"] == "测试时不用 Dropout。"
    out = tmp_path / "feedback.jsonl"
    new, total = export(FeedbackStore(db), out)
    items = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    item = next(i for i in items if i["review"]["answer_id"] == r.id)
    assert new == total == len(items) and item["question"] == DROPOUT
    assert {"id", "question", "source", "gold_contains", "reference_keywords", "in_corpus", "alt_golds"} <= set(item)
    assert export(FeedbackStore(db), out) == (0, total)  # re-export keeps reviewed items, adds none
    from rag.cli import main

    cli_out = tmp_path / "cli.jsonl"
    assert main(["eval", "feedback", "--feedback-db", str(db), "--feedback-out", str(cli_out)]) == 0
    assert [json.loads(x)["id"] for x in cli_out.read_text(encoding="utf-8").splitlines()] == [i["id"] for i in items]


# ---------------------------------------------------------------- safety edges

def test_non_loopback_bind_needs_a_key(tmp_path, monkeypatch):
    from rag.cli import main
    from rag.config import Settings
    from rag.errors import RagError
    from rag.server import serve

    monkeypatch.delenv("RAG_API_KEY", raising=False)
    with pytest.raises(RagError, match="RAG_API_KEY"):
        serve(Settings(corpus_dir=tmp_path), host="0.0.0.0", block=False)
    assert main(["serve", "--host", "0.0.0.0", "--corpus", str(tmp_path)]) != 0


def test_foreign_hosts_and_origins_get_nothing(server):
    running, _ = server
    with _http(running) as h:
        assert h.get("/v1/models", headers={"Host": "evil.example"}).status_code == 421  # DNS rebinding
        assert h.get("/", headers={"Host": "evil.example:80"}).status_code == 421
        for origin in EVIL_ORIGINS:
            pre = h.options("/v1/chat/completions", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "content-type"})
            assert "access-control-allow-origin" not in pre.headers
            r = h.post("/v1/retrieve", json={"query": "dropout"}, headers={"Origin": origin})
            assert "access-control-allow-origin" not in r.headers
            for method, path in [("GET", "/config"), ("POST", "/gradio_api/queue/join"), ("GET", "/v1/models")]:
                r = h.request(method, path, headers={"Origin": origin})  # the mounted UI's routes too
                assert "access-control-allow-origin" not in r.headers, (method, path, origin)
        # a form post (no preflight in a browser) is refused: JSON only
        r = h.post("/v1/chat/completions", content=b'{"messages":[]}', headers={"content-type": "text/plain"})
        assert r.status_code == 415


def test_body_size_is_limited(server):
    from rag.server import MAX_BODY_BYTES

    running, _ = server
    big = {"messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]}
    with _http(running) as h:
        assert h.post("/v1/chat/completions", json=big).status_code == 413

        def chunked():  # no Content-Length: the cap applies to the bytes actually read
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(MAX_BODY_BYTES // 4096 + 2):
                yield b"x" * 4096
            yield b'"}]}'

        r = h.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_bearer_token_is_required_when_configured(tmp_path):
    running = _start(tmp_path, ScriptedGenerator(), api_key="s3cret-key")
    try:
        with _http(running) as h:
            assert h.get("/v1/models").status_code == 401
            assert h.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert h.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
            for path in ("/config", "/gradio_api/info"):  # the UI asks for the key too (as its password)
                assert h.get(path).status_code in (401, 403), path
            assert h.post("/login", data={"username": "me", "password": "s3cret-key"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            _client(running, api_key="wrong").models.list()
        r = _client(running, api_key="s3cret-key").chat.completions.create(
            model="fake", messages=[{"role": "user", "content": DROPOUT}])
        assert "[1]" in r.choices[0].message.content
    finally:
        running.close()


# ---------------------------------------------------------------- queue and watchdog

def test_stalled_generation_frees_the_slot_within_its_budget(tight):
    running, gen = tight
    gate = running.service.gate
    client = _client(running, timeout=30)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": DROPOUT + " stallnow"}])
    assert e.value.status_code == 504 and "nothing for 1 s" in str(e.value)
    assert time.monotonic() - t0 < gate.stall + gate.grace + 2
    deadline = time.monotonic() + gate.grace + 1
    while gate.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gate.busy and gate.stats["abandoned"] >= 1  # the wedged thread was left behind, the slot freed
    # streaming: the error arrives as an SSE error event the client raises
    with pytest.raises(openai.APIError, match="nothing for"):
        list(client.chat.completions.create(model="fake", stream=True,
                                            messages=[{"role": "user", "content": DROPOUT + " stallnow"}]))
    r = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": DROPOUT}])
    assert "[1]" in r.choices[0].message.content  # the next question is answered normally


def test_answer_over_its_time_budget_is_stopped(tight):
    running, gen = tight
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError, match="time budget") as e:
        _client(running, timeout=30).chat.completions.create(
            model="fake", messages=[{"role": "user", "content": DROPOUT + " slownow"}])
    assert e.value.status_code == 504 and time.monotonic() - t0 < running.service.gate.budget + 2
    time.sleep(0.5)
    assert not running.service.gate.busy  # slownow yields, so it stopped at its next piece


def test_client_disconnect_cancels_the_generation(tight):
    running, gen = tight
    gate = running.service.gate
    with _http(running) as h:
        with h.stream("POST", "/v1/chat/completions", json={"stream": True, "messages": [
                {"role": "user", "content": DROPOUT + " slownow"}]}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(10)]  # role, the evidence quote, then the model's sentences
            assert any("慢" in x for x in got)
        # the response is closed: the server notices and stops the model
    deadline = time.monotonic() + 2.5
    while gate.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gate.busy
    n = gen.produced
    time.sleep(0.5)
    assert gen.produced == n  # no more pieces are being generated


def test_client_timeout_on_a_plain_request_cancels_too(tight):
    running, gen = tight
    gate = running.service.gate
    with _http(running) as h, pytest.raises(httpx.ReadTimeout):
        h.post("/v1/chat/completions", timeout=0.8, json={"messages": [{"role": "user", "content": DROPOUT + " slownow"}]})
    deadline = time.monotonic() + 1.2
    while gate.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gate.busy  # well before the 3 s budget: the server saw the client leave


def test_full_queue_is_a_clean_429_with_retry_after(tight):
    running, gen = tight
    gate = running.service.gate
    held = gate.acquire()  # the model is busy ...
    max_wait, gate.max_wait = gate.max_wait, 1000  # (count-bounded here, not by the expected wait)
    delay, gen.delay = gen.delay, 0.002  # the queue's behaviour does not depend on the pace; 16 answers do
    try:
        with _http(running) as h, cf.ThreadPoolExecutor(gate.max_waiting) as pool:
            body = {"messages": [{"role": "user", "content": DROPOUT}]}
            waiting = [pool.submit(h.post, "/v1/chat/completions", json=body) for _ in range(gate.max_waiting)]
            deadline = time.monotonic() + 10
            while gate.waiting < gate.max_waiting and time.monotonic() < deadline:
                time.sleep(0.02)
            r = h.post("/v1/chat/completions", json=body)  # ... and the wait list is full
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "queue_full"
            held.release()
            assert [f.result().status_code for f in waiting] == [200] * gate.max_waiting
    finally:
        held.release()
        gate.max_wait, gen.delay = max_wait, delay


def test_expected_wait_over_the_limit_is_refused_at_once():
    from rag.errors import ServiceBusy
    from rag.gate import GenerationGate

    gate = GenerationGate(max_waiting=16, budget=6)
    gate.stats["served"], gate.service_s = 5, 4.0
    held = gate.acquire()
    waited = []
    t = threading.Thread(target=lambda: waited.append(pytest.raises(ServiceBusy, gate.acquire, timeout=0.5)))
    t.start()
    time.sleep(0.1)
    with pytest.raises(ServiceBusy) as e:  # one waiting x 4 s + own 4 s > 6 s: a 429 now, not a 503 later
        gate.acquire()
    assert e.value.full and e.value.retry_after >= 8
    t.join()
    held.release()


def test_hundred_concurrent_clients_get_answers_or_429(server):
    running, _ = server
    client = _client(running, timeout=60)
    q = [{"role": "user", "content": DROPOUT}]

    def one(i):
        try:
            if i % 2:
                chunks = list(client.chat.completions.create(model="fake", messages=q, stream=True))
                return "ok" if "[1]" in "".join(c.choices[0].delta.content or "" for c in chunks) else "bad"
            r = client.chat.completions.create(model="fake", messages=q)
            return "ok" if "[1]" in r.choices[0].message.content else "bad"
        except openai.RateLimitError as e:
            return "429" if int(e.response.headers["Retry-After"]) >= 1 else "429-no-retry-after"
        except Exception as e:  # any 5xx, timeout or connection error fails the test
            return f"{type(e).__name__}: {e}"

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    outcomes = {r: results.count(r) for r in set(results)}
    assert set(outcomes) <= {"ok", "429"}, outcomes
    assert outcomes.get("ok", 0) >= running.service.gate.max_waiting + 1, outcomes
    assert time.monotonic() - t0 < 60


def test_ui_answers_share_the_slot_and_the_watchdog(tight):
    """The UI's answer_turn goes through the same gate (bounded=False): it waits while the API holds
    the slot, and a stalled UI answer becomes an error message, not a spinner forever."""
    from rag.errors import GenerationTimeout

    running, _ = tight
    gate, assistant = running.service.gate, running.service.backend.assistant
    held = gate.acquire()
    got = []
    t = threading.Thread(target=lambda: got.extend(gate.stream(lambda: assistant.ask(DROPOUT), bounded=False)))
    t.start()
    time.sleep(0.3)
    assert not got and gate.waiting == 1
    held.release()
    t.join(10)
    assert got[-1].kind == "done"
    with pytest.raises(GenerationTimeout):
        list(gate.stream(lambda: assistant.ask(DROPOUT + " stallnow"), bounded=False))


def test_readme_openai_example_works_as_written(server, capsys):
    import re

    from conftest import ROOT

    running, _ = server
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## API server"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 5 and "http://127.0.0.1:8000/v1" in code
    exec(compile(code.replace("http://127.0.0.1:8000", running.url), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "[1]" in out and "notes.md" in out and "True" in out


def test_slot_comes_back_within_the_budget_even_if_nobody_reads():
    """A client gone before its response started never reads the events: the budget still holds."""
    from rag.gate import GenerationGate

    gate = GenerationGate(stall=0.2, budget=0.6, grace=0.2)
    never = threading.Event()

    def wedged():
        yield "x"
        never.wait()

    gate.run(gate.acquire(), wedged)
    t0 = time.monotonic()
    slot = gate.acquire(timeout=3)  # waits for the expired one
    assert time.monotonic() - t0 < 0.6 + 0.2 + 0.5 and gate.stats["abandoned"] == 1
    slot.release()
    never.set()


def test_a_failing_feedback_store_never_fails_the_answer(tmp_path):
    """Recording an answer is bookkeeping: a broken database logs a warning; a rating says why it failed."""
    from rag.errors import FeedbackError, RagError
    from rag.feedback import FeedbackStore
    from test_ui import _answer, _hit

    store = FeedbackStore(tmp_path / "fb.sqlite3")
    store._db.execute("DROP TABLE answers")  # stands in for a full disk / damaged file
    store.record_answer("x", _answer("测试时关闭 Dropout [1]。", [_hit("测试时关闭 Dropout。")]), "m")
    with pytest.raises(RagError, match="could not store") as e:  # a 500 over HTTP, not the client's fault
        store.rate("x", "down")
    assert not isinstance(e.value, FeedbackError)


def test_ui_session_state_is_bounded(server):
    """gradio keeps every browser session's state (10000 by default, ~0.2 MB each): capped here."""
    from rag.ui import SESSIONS

    running, _ = server
    route = next(r for r in running.server.config.app.app.routes if getattr(r, "path", "") == "")
    assert route.app.state_holder.capacity == SESSIONS <= 1000
