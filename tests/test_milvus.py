"""The Milvus store must retrieve exactly what the FAISS store retrieves (tested on Milvus Lite)."""

import json

import numpy as np
import pytest

from rag.fakes import FakeEmbedder
from rag.generations import CURRENT
from rag.corpus import scan_sources
from rag.index import build_index, load_index
from rag.milvus_store import ARTIFACT, collection_name, is_lite, milvus_params
from rag.vectors import build_vector_index, load_vector_index

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


def vectors(n=300, dim=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_names_and_params():
    assert collection_name("gen-20260101-120000-42-000001") == "rag_gen_20260101_120000_42_000001"
    assert is_lite("milvus.db") and is_lite("/data/x.db") and not is_lite("http://milvus:19530")
    assert milvus_params("auto", 187, 512)["index_type"] == "FLAT"
    assert milvus_params("hnsw", 200_000, 512, ef_search=80) == {
        "index_type": "HNSW", "build": {"M": 32, "efConstruction": 40}, "search": {"ef": 80}}
    assert milvus_params("ivf-sq8", 1_000_000, 384)["build"] == {"nlist": 4096}


@pytest.mark.parametrize("store", ["faiss", "milvus"])
def test_same_top_k_on_the_same_vectors(store, tmp_path):
    base, queries = vectors(), vectors(20, seed=1)
    truth = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]
    gen = tmp_path / "gen-1"
    gen.mkdir()
    vi = build_vector_index("flat", 32, base, store=store, gen_dir=gen, generation="gen-1")
    vi.save(gen / getattr(vi, "artifact", "vectors.faiss"))
    loaded = load_vector_index(vi.params(), gen / getattr(vi, "artifact", "vectors.faiss"))
    scores, rows = loaded.search(queries, 10)
    assert loaded.ntotal == 300
    assert (rows == truth).all()
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, truth, 1), rtol=1e-4, atol=1e-5)
    short = loaded.search(queries[:1], 1000)  # k larger than the collection: clamp, like FAISS
    assert short[1].shape == (1, 300)


@pytest.mark.parametrize("kind", ["hnsw", "ivf-flat", "ivf-sq8"])
def test_milvus_lite_ann_kinds(kind, tmp_path):
    base, queries = vectors(1000), vectors(10, seed=2)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :5]
    vi = build_vector_index(kind, 32, base, store="milvus", gen_dir=tmp_path, generation="g", nprobe=64, ef_search=128)
    p = vi.params()
    assert p["store"] == "milvus" and p["index_type"] == {"hnsw": "HNSW", "ivf-flat": "IVF_FLAT", "ivf-sq8": "IVF_SQ8"}[kind]
    loaded = load_vector_index(p, tmp_path / ARTIFACT)
    rows = loaded.search(queries, 5)[1]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, truth)]) >= 0.9


def build(corpus, index_dir, request):
    emb = FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, vector_request=request)


@pytest.mark.parametrize("store", ["faiss", "milvus"])
def test_assistant_retrieval_is_the_same_on_both_stores(store, settings, tmp_path):
    from dataclasses import replace

    from rag.fakes import FakeGenerator
    from rag.assistant import Assistant

    results = {}
    for s in ("faiss", store):
        a = Assistant(replace(settings, index_dir=tmp_path / f"idx-{s}", store=s), embedder=FakeEmbedder(),
                      generator=FakeGenerator())
        a.build()
        r = a.search("学习率太大会怎样?", 3, mode="dense")
        results[s] = [(h.chunk.id, round(h.dense, 5)) for h in r.hits]
        assert a.answer("学习率太大会怎样?").hits
    assert results[store] == results["faiss"]


def test_generations_manifest_and_cleanup_with_a_shared_database(corpus, tmp_path):
    """A --milvus-uri shared by generations (as a server is): one collection per generation, old ones dropped."""
    from pymilvus import MilvusClient

    shared = str(tmp_path / "shared.db")
    req = {"index": "auto", "store": "milvus", "milvus_uri": shared}
    build(corpus, tmp_path / "idx", req)
    for i in range(3):  # three more generations; only KEEP_GENERATIONS (2) may keep their collections
        (corpus / f"extra{i}.md").write_text(f"1. 问题{i}?\n答案{i}。\n", encoding="utf-8")
        build(corpus, tmp_path / "idx", req)
    idx = load_index(tmp_path / "idx")
    m = idx.manifest
    assert m["vector_index"]["store"] == "milvus" and m["vector_index"]["uri"] == shared
    assert m["vector_index"]["collection"] == collection_name(idx.path.name)
    assert ARTIFACT in m["artifacts"] and idx.vectors.ntotal == len(idx.chunks)
    gens = sorted(p.name for p in (tmp_path / "idx").glob("gen-*"))
    names = set(MilvusClient(shared).list_collections())
    assert names == {collection_name(g) for g in gens} and len(names) == 2


def test_default_lite_database_lives_in_the_generation(corpus, tmp_path):
    build(corpus, tmp_path / "idx", {"index": "auto", "store": "milvus"})
    gen = tmp_path / "idx" / (tmp_path / "idx" / CURRENT).read_text().strip()
    pointer = json.loads((gen / ARTIFACT).read_text())
    assert pointer["uri"] == "milvus.db" and (gen / "milvus.db").exists()
    assert load_index(tmp_path / "idx").vectors.ntotal == pointer["ntotal"]
    # a missing collection is reported as a corrupt index, not a crash
    import shutil

    from rag.milvus_store import release_lite

    release_lite(str(gen / "milvus.db"))  # as in a fresh process: nothing of the database in memory
    shutil.rmtree(gen / "milvus.db")
    from rag.errors import RagError

    with pytest.raises(RagError):
        load_index(tmp_path / "idx")


QUERIES = ["学习率太大会怎样?", "测试的时候要用 Dropout 吗", "BN 的作用", "梯度消失的原因", "gradient clipping", "红烧肉怎么做"]


def test_keyword_legs_and_hybrid_retrieval_in_milvus_match_the_local_ones(settings, tmp_path):
    """`--store milvus` moves the keyword legs into the collection (BM25 functions): same rankings,
    scores and coverage as the local tantivy legs, so fusion and the abstain gate are unchanged."""
    from dataclasses import replace

    from rag.fakes import FakeGenerator
    from rag.assistant import Assistant

    runs, scores = {}, {}
    for s in ("faiss", "milvus"):
        a = Assistant(replace(settings, index_dir=tmp_path / f"idx-{s}", store=s), embedder=FakeEmbedder(),
                      generator=FakeGenerator())
        a.build()
        idx = a.index()
        assert idx.manifest["keyword"].get("store") == ("milvus" if s == "milvus" else None)
        out = []
        for q in QUERIES:
            for leg in ("jieba", "bigram"):
                hits = idx.bm25.legs[leg].search(q, 10)
                out.append([(h.row, round(h.coverage, 3)) for h in hits])
                scores.setdefault((q, leg), []).append([h.score for h in hits])
            for mode in ("bm25", "hybrid"):
                r = a.search(q, 5, mode=mode)
                # (top 4: the fake embedder's cosines tie at rank 5 for a question nothing matches)
                out.append(([h.chunk.id for h in r.hits][:4], r.covered, round(r.best_coverage, 3)))
        runs[s] = out
    assert runs["milvus"] == runs["faiss"]
    for local, milvus in scores.values():  # tantivy keeps document lengths as 1-byte norms, Lite exact ones: a few % apart
        np.testing.assert_allclose(milvus, local, rtol=0.1)
    assert not list((tmp_path / "idx-milvus").glob("keyword-*"))  # nothing of the keyword side stays local
