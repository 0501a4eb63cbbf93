"""doc2query enrichment: the cache (hit, miss, refusal on model/prompt change, corruption, resume) and the
retrieval leg over the generated text, with fake generators; one slow test with the real model."""

import json

import pytest

from rag import cli, doc2query
from rag.assistant import Assistant
from rag.config import Settings
from rag.doc2query import CACHE, Doc2QueryLeg, document, enrich, parse, read_cache
from rag.errors import IndexCorrupt, IndexLocked, SettingsError
from rag.fakes import FakeGenerator, fake_generator

MODEL = "fake:reply=x"


class TaggingGenerator(FakeGenerator):
    """Replies with keywords that name the passage's first line, so each chunk gets its own text;
    optionally stops the run (like Ctrl-C) after `interrupt_after` replies."""

    def __init__(self, interrupt_after=None, extra="zzqword"):
        super().__init__()
        self.calls = 0
        self.interrupt_after = interrupt_after
        self.extra = extra

    def stream(self, messages, max_tokens=256, prefix=""):
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.prompts.append(messages)
        passage = messages[-1]["content"].split("\n", 1)[1]
        yield f"{self.extra}{self.calls}, keyword\n问：{passage.splitlines()[0][:20]}怎么理解？\nQ: what is it?"


def _loader(gen, counter=None):
    def load():
        if counter is not None:
            counter.append(1)
        return gen
    return load


@pytest.fixture
def built(assistant):
    assistant.build()
    return assistant


def _chunks(a):
    return list(a.index().chunks)


def _records(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()[1:]]


# ---------------------------------------------------------------- the reply

def test_parse_keeps_keywords_and_questions_drops_repeats_and_chatter():
    raw = "BN, 批归一化，BN、Batch Normalization\n问：为啥要归一化？\n问：为啥要归一化？\n闲话一句\nQ: Why normalize?"
    keywords, questions = parse(raw)
    assert keywords == ["BN", "批归一化", "Batch Normalization"]
    assert questions == ["为啥要归一化？", "Why normalize?"]
    assert document(raw).splitlines()[0] == "BN 批归一化 Batch Normalization"


def test_generation_stops_when_the_model_loops():
    gen = FakeGenerator(reply="面试题, 面试, " + "面试题, " * 200)
    raw = doc2query.generate(gen, "一段笔记")
    assert len(raw) < 60 and parse(raw)[0] == ["面试题", "面试"]
    assert gen.prefixes == [doc2query.PREFIX] and gen.prompts[0][0]["content"] == doc2query.SYSTEM


# ---------------------------------------------------------------- the cache

def test_enrich_generates_once_then_hits_the_cache(built, tmp_path):
    a, gen, loads = built, fake_generator("fake:reply=梯度, gradient\n问：越往前传越小怎么办？"), []
    chunks = _chunks(a)
    r = enrich(a.settings.index_dir, chunks, MODEL, _loader(gen, loads))
    assert r.generated == r.chunks == len({doc2query.content_hash(doc2query.passage_of(c)) for c in chunks}) > 3
    assert len(gen.prompts) == r.generated and loads == [1]
    cache = read_cache(a.settings.index_dir / CACHE)
    assert cache.model == MODEL and cache.prompt == doc2query.prompt_key() and cache.records == r.generated
    again = enrich(a.settings.index_dir, chunks, MODEL, _loader(gen, loads))
    assert again.generated == 0 and again.cached == r.chunks and loads == [1]  # the model is not even loaded


def test_another_model_or_prompt_is_refused_and_regenerated(built, monkeypatch):
    a, chunks = built, _chunks(built)
    first = enrich(a.settings.index_dir, chunks, MODEL, _loader(FakeGenerator(reply="甲")))
    warnings = []
    r = enrich(a.settings.index_dir, chunks, "fake:reply=other", _loader(FakeGenerator(reply="乙")), warn=warnings.append)
    assert r.generated == first.chunks and "model fake:reply=x" in r.restarted and warnings
    assert read_cache(a.settings.index_dir / CACHE).model == "fake:reply=other"
    assert set(read_cache(a.settings.index_dir / CACHE).replies.values()) == {"乙"}
    monkeypatch.setattr(doc2query, "SYSTEM", doc2query.SYSTEM + "（新版）")
    r = enrich(a.settings.index_dir, chunks, "fake:reply=other", _loader(FakeGenerator(reply="丙")))
    assert r.generated == first.chunks and r.restarted.startswith("prompt")
    assert set(read_cache(a.settings.index_dir / CACHE).replies.values()) == {"丙"}


def test_corrupt_cache_is_detected_not_loaded(built):
    a, chunks = built, _chunks(built)
    enrich(a.settings.index_dir, chunks, MODEL, _loader(TaggingGenerator()))
    path = a.settings.index_dir / CACHE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace("zzqword", "zzqwore")  # one flipped character in a middle record
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(IndexCorrupt, match=":3: damaged"):
        read_cache(path)
    warnings = []
    leg = Doc2QueryLeg(a.settings.index_dir, chunks, warn=warnings.append)
    assert leg.search("zzqword1", 5) == [] and "damaged" in warnings[0]  # searched without it, said so
    r = enrich(a.settings.index_dir, chunks, MODEL, _loader(TaggingGenerator()), warn=warnings.append)
    assert r.restarted == "corrupt" and r.generated == r.chunks
    assert read_cache(path).records == r.chunks
    path.write_bytes(b"\x00garbage\n")
    with pytest.raises(IndexCorrupt):
        read_cache(path)


def test_interrupted_run_resumes_without_losing_finished_chunks(built):
    a, chunks = built, _chunks(built)
    path = a.settings.index_dir / CACHE
    with pytest.raises(KeyboardInterrupt):
        enrich(a.settings.index_dir, chunks, MODEL, _loader(TaggingGenerator(interrupt_after=2)))
    assert len(_records(path)) == 2
    with open(path, "ab") as f:  # a kill in the middle of a write leaves a torn last line
        f.write(b'{"h": "abc", "raw": "' + "半".encode() * 400)
    assert read_cache(path).records == 2
    gen = TaggingGenerator()
    r = enrich(a.settings.index_dir, chunks, MODEL, _loader(gen))
    assert r.cached == 2 and r.generated == r.chunks - 2 == gen.calls
    assert path.read_bytes().endswith(b"\n") and read_cache(path).records == r.chunks  # torn tail dropped


def test_a_second_enrichment_of_the_same_index_is_refused(built):
    a = built
    with doc2query._enrich_lock(a.settings.index_dir):
        with pytest.raises(IndexLocked):
            enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(FakeGenerator(reply="甲")))


def test_new_file_generates_only_for_its_chunks(built):
    a = built
    first = enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(TaggingGenerator()))
    (a.settings.corpus_dir / "new.md").write_text("1. 什么是感受野?\n感受野是输出特征图上一个点对应的输入区域。\n",
                                                  encoding="utf-8")
    a.build()
    gen = TaggingGenerator()
    r = enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(gen))
    assert r.generated == gen.calls == 1 and r.cached == first.chunks
    assert "感受野" in gen.prompts[0][-1]["content"]


# ---------------------------------------------------------------- retrieval

def test_ask_works_before_during_and_after_enrichment(built):
    a = built
    assert a.answer("测试的时候要用 Dropout 吗?").text  # no cache at all
    assert len(a.index().doc2query) == 0
    with pytest.raises(KeyboardInterrupt):  # enrichment stopped half way
        enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(TaggingGenerator(interrupt_after=1, extra="qqvocab")))
    leg = a.index().doc2query
    assert len(leg) == 1  # the loaded index sees the growing file without a reload
    hits = a.search("qqvocab1", k=3).hits
    assert hits and hits[0].doc2query is not None and "qqvocab" not in hits[0].chunk.embed_text()
    assert a.answer("测试的时候要用 Dropout 吗?").text
    enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(TaggingGenerator(extra="qqvocab")))
    assert len(leg) == len(_chunks(a))
    assert a.search("qqvocab1", k=3).hits[0].to_dict()["doc2query"] > 0


def test_text_of_another_prompt_is_not_searched(built, monkeypatch):
    a = built
    enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(TaggingGenerator()))
    monkeypatch.setattr(doc2query, "PROMPT_VERSION", doc2query.PROMPT_VERSION + 1)
    assert Doc2QueryLeg(a.settings.index_dir, _chunks(a)).search("zzqword1", 5) == []


# ---------------------------------------------------------------- settings and CLI

def test_enrich_setting_from_env_and_flag(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_ENRICH", "yes")
    assert Settings.from_env().enrich is True
    monkeypatch.setenv("RAG_ENRICH", "maybe")
    with pytest.raises(SettingsError, match="RAG_ENRICH"):
        Settings.from_env()
    monkeypatch.setenv("RAG_ENRICH", "0")
    assert Settings.from_env().enrich is False
    monkeypatch.delenv("RAG_ENRICH")
    assert Settings.from_env().enrich is False  # opt-in (eval/results/doc2query.md says why)
    args = cli.build_parser().parse_args(["index", "--enrich"])
    assert args.enrich is True and cli.build_parser().parse_args(["index"]).enrich is None
    assert cli.build_parser().parse_args(["index", "--no-enrich"]).enrich is False


def test_rag_index_enrich_with_the_fake_reply_spec(settings, capsys, monkeypatch):
    monkeypatch.setenv("RAG_EMBEDDER", "fake")
    monkeypatch.delenv("RAG_ENRICH", raising=False)
    argv = ["index", "--corpus", str(settings.corpus_dir), "--index-dir", str(settings.index_dir),
            "--generator", "fake:reply=梯度消失, vanishing gradient\n问：越往前传越小怎么办？"]
    assert cli.main(argv + ["--enrich"]) == 0
    out = capsys.readouterr().out
    assert "doc2query: generated text for" in out
    assert cli.main(argv + ["--enrich"]) == 0 and "doc2query: up to date" in capsys.readouterr().out
    assert cli.main(argv + ["--no-enrich"]) == 0 and "doc2query" not in capsys.readouterr().out
    assert cli.main(argv) == 0 and "doc2query" not in capsys.readouterr().out  # off unless asked
    monkeypatch.setenv("RAG_ENRICH", "1")
    assert cli.main(argv) == 0 and "doc2query: up to date" in capsys.readouterr().out
    a = Assistant(Settings.from_env(corpus_dir=settings.corpus_dir, index_dir=settings.index_dir, generator="fake"))
    assert any(h.doc2query for h in a.search("越往前传越小", k=5).hits)


@pytest.mark.slow
def test_real_model_writes_keywords_and_questions_for_two_chunks(tmp_path):
    from conftest import write_sample_corpus

    s = Settings.from_env(corpus_dir=write_sample_corpus(tmp_path / "corpus"), index_dir=tmp_path / "index",
                          embedder="fake")
    a = Assistant(s)
    a.build()
    r = enrich(s.index_dir, _chunks(a), s.generator, lambda: a.generator, limit=2)
    assert r.generated == 2 and r.model == s.generator
    cache = read_cache(s.index_dir / CACHE)
    for raw in cache.replies.values():
        keywords, questions = parse(raw)
        assert keywords and questions, raw  # the format of the worked example, not a chat reply
    assert len(Doc2QueryLeg(s.index_dir, _chunks(a))) == 2


def test_records_of_chunks_long_gone_are_compacted_away(built):
    a, chunks = built, _chunks(built)
    enrich(a.settings.index_dir, chunks, MODEL, _loader(TaggingGenerator()))
    cache = read_cache(a.settings.index_dir / CACHE)
    w = doc2query._Appender(cache)
    for i in range(200):  # text of chunks that edits removed long ago
        w.add(f"gone{i}", "旧")
    w.close()
    r = enrich(a.settings.index_dir, chunks, MODEL, _loader(TaggingGenerator()))
    after = read_cache(a.settings.index_dir / CACHE)
    assert r.generated == 0 and after.records == r.chunks and "旧" not in after.replies.values()


def test_generated_text_lifts_its_chunk_within_the_keyword_legs(built):
    from dataclasses import replace

    from rag.retriever import Retriever

    a = built
    index = a.index()
    plain = Retriever(replace(index, doc2query=None), a.embedder)
    q = "参数越往前传越小"
    before = [h.chunk.id for h in plain.search(q, 5).hits]
    assert [h.chunk.id for h in a.search(q, 5).hits] == before  # nothing generated yet: the same ranking
    target = next(c for c in _chunks(a) if "梯度爆炸" in c.text)

    class Knows(TaggingGenerator):
        def stream(self, messages, max_tokens=256, prefix=""):
            passage = messages[-1]["content"]
            yield "越往前传越小, vanishing" if "梯度爆炸" in passage else "无关, other"

    enrich(a.settings.index_dir, _chunks(a), MODEL, _loader(Knows()))
    hits = a.search(q, 5).hits
    assert hits[0].chunk.id == target.id != before[0] and hits[0].doc2query > 0


def test_a_generator_that_cannot_load_is_a_warning_unless_enrichment_was_asked_for(settings, capsys, monkeypatch):
    from rag.errors import ModelNotInstalled

    monkeypatch.setenv("RAG_EMBEDDER", "fake")
    monkeypatch.setenv("RAG_ENRICH", "1")  # the setting (a default or the environment), not the flag
    argv = ["index", "--corpus", str(settings.corpus_dir), "--index-dir", str(settings.index_dir),
            "--generator", str(settings.cache_dir / "missing.gguf")]
    assert cli.main(argv) == 0  # the index was built; enrichment could not run
    err = capsys.readouterr().err
    assert "doc2query skipped" in err and "missing.gguf" in err
    assert cli.main(argv + ["--enrich"]) == ModelNotInstalled.exit_code


def test_a_generator_that_cannot_load_keeps_the_old_cache(built):
    from rag.errors import ModelNotInstalled

    a, chunks = built, _chunks(built)
    enrich(a.settings.index_dir, chunks, MODEL, _loader(FakeGenerator(reply="甲")))

    def broken():
        raise ModelNotInstalled("no such model")

    with pytest.raises(ModelNotInstalled):
        enrich(a.settings.index_dir, chunks, "fake:reply=other", broken)
    assert set(read_cache(a.settings.index_dir / CACHE).replies.values()) == {"甲"}
