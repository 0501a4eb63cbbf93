"""Per-chunk KV caches with the real 1.5B model (slow): built on first use, reused after a restart,
rebuilt when a note changes or a cache file is damaged."""

from __future__ import annotations

import pytest

from conftest import write_sample_corpus
from rag.assistant import Assistant
from rag.config import Settings
from rag.generators import load_generator

pytestmark = pytest.mark.slow

QUESTION = "梯度爆炸比梯度消失更常见吗？"


def _generator(settings, kv_dir):
    return load_generator(settings.generator, settings.cache_dir, threads=2, passage_cache=kv_dir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chunkkv")
    s = Settings.from_env(corpus_dir=write_sample_corpus(tmp / "corpus"), index_dir=tmp / "index",
                          chunk_kv="on", threads=2)
    Assistant.from_settings(s).build()
    return s, tmp / "kv"


def _ask(settings, gen, question=QUESTION):
    a = Assistant(settings, generator=gen)
    ans = a.answer(question)
    return ans, dict(gen.passage_stats), dict(gen.passage_store.stats)


def test_cache_built_on_first_use_then_reused_after_a_restart(setup):
    s, kv = setup
    gen = _generator(s, kv)
    ans, linked, store = _ask(s, gen)
    assert not ans.abstained and ans.sources, ans.text
    assert linked["passage_tokens_read"] > 0 and store["written"] >= 1 and linked["linked"] > 0
    assert linked["link_failures"] == 0
    files = sorted(p.name for p in kv.glob("*.kv"))
    del gen

    again = _generator(s, kv)  # a new process, as far as the model is concerned
    ans2, linked2, store2 = _ask(s, again)
    assert linked2["passage_tokens_read"] == 0 and store2["written"] == 0 and store2["hits"] >= 1
    assert linked2["linked"] > 0 and ans2.text == ans.text
    assert sorted(p.name for p in kv.glob("*.kv")) == files


def test_damaged_cache_file_is_rebuilt_never_loaded(setup):
    s, kv = setup
    gen = _generator(s, kv)
    _ask(s, gen)  # the caches exist
    for p in kv.glob("*.kv"):
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    fresh = _generator(s, kv)
    ans, linked, store = _ask(s, fresh)
    assert store["rejected"] >= 1 and linked["passage_tokens_read"] > 0 and store["written"] >= 1
    assert not ans.abstained and ans.sources


def test_changed_note_gets_a_new_cache(setup):
    s, kv = setup
    gen = _generator(s, kv)
    _ask(s, gen)
    note = s.corpus_dir / "grad.txt"
    note.write_text(note.read_text(encoding="utf-8").replace("梯度爆炸", "梯度爆炸（exploding gradients）"),
                    encoding="utf-8")
    Assistant.from_settings(s).build()
    before = {p.name for p in kv.glob("*.kv")}
    read0 = gen.passage_stats["passage_tokens_read"]
    ans, linked, store = _ask(s, gen)
    assert linked["passage_tokens_read"] > read0  # the changed chunk was read afresh...
    assert {p.name for p in kv.glob("*.kv")} - before  # ...and stored under its new content's key
    assert "exploding" in " ".join(h.chunk.text for h in ans.hits)
