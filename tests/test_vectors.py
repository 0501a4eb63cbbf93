import json

import numpy as np
import pytest

from rag.fakes import FakeEmbedder
from rag.generations import CURRENT
from rag.corpus import scan_sources
from rag.index import build_index, load_index
from rag.index_sizing import CHOICES, ann_params, choose_kind
from rag.vectors import FLAT_KIND, FaissAnnIndex, FaissFlatIndex, build_vector_index, load_vector_index


def clustered(n, dim=32, centres=40, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact(base, queries, k):
    return np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :k]


def recall10(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def test_auto_follows_the_size_thresholds():
    assert choose_kind(187) == "flat" and choose_kind(99_999) == "flat"
    assert choose_kind(100_000) == "hnsw"
    assert choose_kind(1_000_000) == "ivf-sq8"
    assert choose_kind(10_000_000) == "opq-ivf-pq"


def test_ivf_sizing_follows_the_guidelines():
    p = ann_params("ivf-sq8", 1_000_000, 384)
    assert p["nlist"] == 4096  # 4*sqrt(1M) = 4000, rounded to a power of two
    assert ann_params("ivf-sq8", 100_000_000, 384)["nlist"] == 16384  # capped: k-means cost on 2 cores
    tiny = ann_params("ivf-pq", 187, 512)
    assert tiny["nlist"] * 39 <= 187 and tiny["nbits"] == 7 and 512 % tiny["m"] == 0


def test_default_is_exact_flat_and_unchanged():
    x = clustered(187, 512)
    vi = build_vector_index("auto", 512, x)
    assert isinstance(vi, FaissFlatIndex) and vi.params() == {"kind": FLAT_KIND, "metric": "inner_product"}
    scores, rows = vi.search(x[:5], 10)
    assert (rows == exact(x, x[:5], 10)).all()
    np.testing.assert_allclose(scores, np.sort(x[:5] @ x.T, axis=1)[:, ::-1][:, :10], rtol=1e-5)


@pytest.mark.parametrize("kind", [k for k in CHOICES if k not in ("auto", "flat")])
def test_ann_kinds_recall_and_roundtrip(kind, tmp_path):
    base, queries = clustered(2000), clustered(50, seed=1)
    vi = build_vector_index(kind, 32, base, nprobe=16)
    assert isinstance(vi, FaissAnnIndex) and vi.ntotal == len(base) and vi.is_trained
    p = vi.params()
    assert p["kind"] == kind and "factory" in p and p.get("train_size", 0) <= len(base)
    _, rows = vi.search(queries, 10)
    floor = 0.5 if kind in ("ivf-pq", "opq-ivf-pq") and not p.get("refine") else 0.85
    assert recall10(rows, exact(base, queries, 10)) >= floor
    vi.save(tmp_path / "v.faiss")
    again = load_vector_index(json.loads(json.dumps(p)), tmp_path / "v.faiss")
    assert (again.search(queries, 10)[1] == rows).all()
    assert again.params() == p  # search-time knobs survive the manifest round trip
    if "nprobe" in p:
        assert p["nprobe"] == 16
        tuned = load_vector_index(p, tmp_path / "v.faiss", nprobe=2)
        assert tuned.params()["nprobe"] == 2


def test_hnsw_ef_search_is_settable():
    base = clustered(2000)
    vi = build_vector_index("hnsw", 32, base, ef_search=16)
    assert vi.params()["ef_search"] == 16
    vi.set_search_params(ef_search=200)
    assert vi.params()["ef_search"] == 200
    q = clustered(30, seed=2)
    assert recall10(vi.search(q, 10)[1], exact(base, q, 10)) >= 0.95


@pytest.mark.parametrize("kind", ["hnsw", "ivf-sq8", "opq-ivf-pq"])
def test_tiny_collections_work_with_any_kind(kind):
    x = clustered(60)
    vi = build_vector_index(kind, 32, x)
    assert vi.ntotal == 60
    scores, rows = vi.search(x[:3], 100)
    assert rows.shape == (3, 60) and rows[0, 0] in exact(x, x[:1], 3)[0]


def build(corpus, index_dir, request=None, emb=None):
    emb = emb or FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, vector_request=request), emb


def test_index_records_kind_and_rebuilds_vectors_without_reembedding(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    flat = load_index(tmp_path / "idx")
    assert flat.manifest["vector_index"]["kind"] == FLAT_KIND
    report, emb = build(corpus, tmp_path / "idx", {"index": "hnsw", "store": "faiss", "ef_search": 48})
    assert not report.up_to_date and emb.calls == 0  # only the vector index changed
    idx = load_index(tmp_path / "idx")
    assert idx.manifest["vector_index"]["kind"] == "hnsw" and idx.manifest["vector_index"]["ef_search"] == 48
    assert idx.manifest["vector_request"] == {"index": "hnsw", "store": "faiss", "ef_search": 48}
    q = FakeEmbedder().embed_query("学习率太大会怎样")[None, :]
    assert (idx.vectors.search(q, 3)[1] == flat.vectors.search(q, 3)[1]).all()
    assert build(corpus, tmp_path / "idx", {"index": "hnsw", "store": "faiss", "ef_search": 48})[0].up_to_date
    assert load_index(tmp_path / "idx", vector_search={"ef_search": 99}).vectors.params()["ef_search"] == 99


def test_deletes_and_adds_rebuild_the_ann_index(corpus, tmp_path):
    req = {"index": "hnsw", "store": "faiss"}  # HNSW cannot remove vectors: each generation is rebuilt
    build(corpus, tmp_path / "idx", req)
    (corpus / "grad.txt").unlink()
    (corpus / "new.md").write_text("1. 什么是感受野?\n感受野是输出特征图上一个点对应的输入区域。\n", encoding="utf-8")
    report, _ = build(corpus, tmp_path / "idx", req)
    assert report.removed == ["grad.txt"] and report.added == ["new.md"]
    idx = load_index(tmp_path / "idx")
    assert idx.vectors.ntotal == len(idx.chunks) == report.chunks
    assert {c.source for c in idx.chunks} == {"notes.md", "new.md"}
    gen = (tmp_path / "idx" / CURRENT).read_text().strip()
    assert json.loads((tmp_path / "idx" / gen / "manifest.json").read_text())["vector_index"]["kind"] == "hnsw"
