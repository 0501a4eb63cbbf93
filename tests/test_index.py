import os

import pytest

from rag.fakes import FakeEmbedder
from rag.errors import EmbedderMismatch, IndexCorrupt, IndexLocked, IndexMissing
from rag.generations import CURRENT, write_lock
from rag.corpus import scan_sources
from rag.index import build_index, load_index


def artifact(index_dir, target):
    """A generation's own docids.npy, or its base vector segment in the shared store."""
    import json

    gen = index_dir / (index_dir / CURRENT).read_text().strip()
    if target == "docids.npy":
        return gen / target
    m = json.loads((gen / "manifest.json").read_text())
    base = next(s for s in m["vector_index"]["segments"] if s["role"] == "base")
    return index_dir / m["store"]["dir"] / f"{base['name']}.faiss"


def build(corpus, index_dir, emb=None, **kw):
    emb = emb or FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, **kw), emb


def test_build_then_load(corpus, tmp_path):
    report, _ = build(corpus, tmp_path / "idx")
    assert sorted(report.added) == ["grad.txt", "notes.md"] and report.chunks > 3
    idx = load_index(tmp_path / "idx", "fake")
    assert len(idx.chunks) == idx.vectors.ntotal == len(idx.bm25) == report.chunks
    m = idx.manifest
    assert m["embedder"] == {"id": "fake", "dim": 64, "fingerprint": ""}
    assert set(m["files"]) == {"grad.txt", "notes.md"} and m["chunker"]["chunk_size"] == 400
    assert all(len(a["sha256"]) == 64 for a in m["artifacts"].values())


def test_no_change_is_a_noop_without_embedding(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    gen = (tmp_path / "idx" / CURRENT).read_text()
    emb = FakeEmbedder()
    report, _ = build(corpus, tmp_path / "idx", emb)
    assert report.up_to_date and emb.calls == 0
    assert (tmp_path / "idx" / CURRENT).read_text() == gen


def test_incremental_add_change_delete(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    (corpus / "new.md").write_text("1. 什么是感受野?\n感受野是输出特征图上一个点对应的输入区域。\n", encoding="utf-8")
    (corpus / "notes.md").write_text((corpus / "notes.md").read_text(encoding="utf-8").replace("很慢", "非常慢"), encoding="utf-8")
    (corpus / "grad.txt").unlink()
    emb = FakeEmbedder()
    report, _ = build(corpus, tmp_path / "idx", emb)
    assert report.added == ["new.md"] and report.changed == ["notes.md"] and report.removed == ["grad.txt"]
    assert 1 <= report.embedded <= 3  # only the new file's chunk and the edited unit
    idx = load_index(tmp_path / "idx")
    assert {c.source for c in idx.chunks} == {"new.md", "notes.md"}
    assert any("感受野" in c.text for c in idx.chunks)


def test_bad_file_is_skipped_and_previous_version_kept(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    (corpus / "grad.txt").write_bytes(b"\x00\x01\x02binary" * 10)
    (corpus / "empty.txt").write_bytes(b"")
    report, _ = build(corpus, tmp_path / "idx")
    reasons = dict(report.skipped)
    assert "binary" in reasons["grad.txt"] and "empty" in reasons["empty.txt"]
    idx = load_index(tmp_path / "idx")
    assert any(c.source == "grad.txt" for c in idx.chunks)  # nothing lost


def test_embedder_mismatch_is_refused(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    with pytest.raises(EmbedderMismatch):
        load_index(tmp_path / "idx", "another-model")
    with pytest.raises(EmbedderMismatch):
        build(corpus, tmp_path / "idx", FakeEmbedder(model_id="another-model"))
    report, _ = build(corpus, tmp_path / "idx", FakeEmbedder(model_id="another-model"), rebuild=True)
    assert load_index(tmp_path / "idx", "another-model").embedder_id == "another-model"


def test_missing_index(tmp_path):
    with pytest.raises(IndexMissing):
        load_index(tmp_path / "nothing")


@pytest.mark.parametrize("target", ["vector segment", "docids.npy"])
def test_corruption_is_detected(corpus, tmp_path, target):
    build(corpus, tmp_path / "idx")
    p = artifact(tmp_path / "idx", target)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt, match="checksum"):
        load_index(tmp_path / "idx")


def test_bad_manifest_and_current(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    gen = tmp_path / "idx" / (tmp_path / "idx" / CURRENT).read_text().strip()
    (gen / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorrupt, match="manifest"):
        load_index(tmp_path / "idx")
    (tmp_path / "idx" / CURRENT).write_text("gen-missing")
    with pytest.raises(IndexCorrupt, match="missing"):
        load_index(tmp_path / "idx")
    report, _ = build(corpus, tmp_path / "idx")  # a corrupt index is rebuilt, not trusted
    assert report.chunks and load_index(tmp_path / "idx")


def test_second_writer_is_refused(tmp_path):
    with write_lock(tmp_path):
        with pytest.raises(IndexLocked):
            with write_lock(tmp_path):
                pass


def test_failed_build_leaves_previous_generation(corpus, tmp_path):
    build(corpus, tmp_path / "idx")
    gen = (tmp_path / "idx" / CURRENT).read_text()

    class Exploding(FakeEmbedder):
        def embed_documents(self, texts, progress=False):
            raise KeyboardInterrupt

    (corpus / "new.md").write_text("1. 新问题\n新答案内容在这里。\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        build(corpus, tmp_path / "idx", Exploding())
    assert (tmp_path / "idx" / CURRENT).read_text() == gen
    assert not [p for p in os.listdir(tmp_path / "idx") if p.endswith(".tmp")]
    assert load_index(tmp_path / "idx")


def test_disk_full_is_clean(corpus, tmp_path, monkeypatch):
    import errno

    from rag import index as index_mod
    from rag.errors import DiskFull

    build(corpus, tmp_path / "idx")
    gen = (tmp_path / "idx" / CURRENT).read_text()
    (corpus / "new.md").write_text("1. 新问题\n新答案。\n", encoding="utf-8")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_mod, "write_rows", full)
    with pytest.raises(DiskFull):
        build(corpus, tmp_path / "idx")
    assert (tmp_path / "idx" / CURRENT).read_text() == gen
    assert not [p for p in os.listdir(tmp_path / "idx") if p.endswith(".tmp")]


def test_symlinks_are_not_followed(corpus, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("机密内容", encoding="utf-8")
    (corpus / "link.txt").symlink_to(outside)
    assert "link.txt" not in {s.source for s in scan_sources([corpus])}


def test_same_name_same_dim_different_build_is_refused(corpus, tmp_path):
    a = FakeEmbedder()
    a.fingerprint = "build-a"
    build(corpus, tmp_path / "idx", a)
    b = FakeEmbedder()
    b.fingerprint = "build-b"
    (corpus / "new.md").write_text("1. 新问题\n新答案。\n", encoding="utf-8")
    with pytest.raises(EmbedderMismatch, match="build"):
        build(corpus, tmp_path / "idx", b)


def test_sigkill_mid_build_leaves_previous_index_serving(corpus, tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    build(corpus, tmp_path / "idx")
    gen = (tmp_path / "idx" / CURRENT).read_text()
    (corpus / "new.md").write_text("1. 新问题\n新答案。\n", encoding="utf-8")
    script = textwrap.dedent(f"""
        import sys, time
        from rag.fakes import FakeEmbedder
        from rag.corpus import scan_sources
        from rag.index import build_index
        class Slow(FakeEmbedder):
            def embed_documents(self, texts, progress=False):
                print("embedding", flush=True); time.sleep(30)
        e = Slow()
        build_index(scan_sources([{str(corpus)!r}]), {str(tmp_path / "idx")!r}, e.model_id, lambda: e)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "embedding"
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / "idx" / CURRENT).read_text() == gen
    assert load_index(tmp_path / "idx")
    report, _ = build(corpus, tmp_path / "idx")
    assert report.added == ["new.md"]
    assert not [p for p in os.listdir(tmp_path / "idx") if p.endswith(".tmp")]


def test_large_artifacts_unchanged_since_the_build_are_not_rehashed_on_load(corpus, tmp_path, monkeypatch):
    """Loads skip hashing big artifacts whose size and mtime are as built (gigabytes at 1M chunks);
    anything else is hashed. `rag index` hashes the generation's own files before reusing it; the
    shared vector segments, written once, it checks by the same rule as a load."""
    from rag import generations

    build(corpus, tmp_path / "idx")
    monkeypatch.setattr(generations, "QUICK_VERIFY_BYTES", 1)
    for target in ("vector segment", "docids.npy"):
        p = artifact(tmp_path / "idx", target)
        st = p.stat()
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 1
        p.write_bytes(bytes(data))
        with pytest.raises(IndexCorrupt, match="fails its checksum"):  # rewritten: new mtime, so hashed
            load_index(tmp_path / "idx", "fake")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: trusted on load
        if target != "docids.npy":  # (its flipped byte is in the .npy header: unreadable either way)
            load_index(tmp_path / "idx", "fake")
    warnings = []
    emb = FakeEmbedder()
    build_index(scan_sources([corpus]), tmp_path / "idx", emb.model_id, lambda: emb, warn=warnings.append)
    assert any("docids.npy fails its checksum" in w for w in warnings)  # the next `rag index` hashes and rebuilds
