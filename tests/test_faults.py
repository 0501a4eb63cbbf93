"""Fault injection (reliability checklist 6.2, F1-F17): kills, full disks, damaged files, wrong models,
concurrent writers and readers. Child processes run the real `rag index` code path through the
driver in eval/killloop.py (with the fake embedder); the full kill loop is `python eval/killloop.py`."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT
from rag.fakes import FakeEmbedder, FakeGenerator
from rag.errors import DiskFull, EmbedderMismatch, GenerationError, IndexCorrupt, IndexLocked, ModelNotInstalled, RagError
from rag.generations import CURRENT, current_generation
from rag.corpus import scan_sources
from rag.index import build_index, load_index

spec = importlib.util.spec_from_file_location("killloop", ROOT / "eval" / "killloop.py")
killloop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(killloop)

NEW_DOC = "1. 什么是感受野?\n感受野是输出特征图上一个点对应的输入区域大小。\n"


def build(corpus, index_dir, emb=None, **kw):
    emb = emb or FakeEmbedder()
    return build_index(scan_sources([corpus]), index_dir, emb.model_id, lambda: emb, **kw)


def live(index_dir: Path) -> str:
    return (index_dir / CURRENT).read_text().strip()


def entries(index_dir: Path) -> set[str]:
    return {p.name for p in index_dir.iterdir() if p.name != ".lock"}


def artifact(index_dir: Path, target: str) -> Path:
    """Where a generation's data lives: its own docids.npy, or the shared store's chunk table and
    base vector segment."""
    import json

    gen = current_generation(index_dir)
    if target == "docids.npy":
        return gen / target
    m = json.loads((gen / "manifest.json").read_text())
    store = index_dir / m["store"]["dir"]
    if target == "chunks.sqlite":
        return store / target
    base = next(s for s in m["vector_index"]["segments"] if s["role"] == "base")
    return store / f"{base['name']}.faiss"


def start_child(corpus, index_dir, *extra) -> subprocess.Popen:
    p = subprocess.Popen(killloop.child_cmd(corpus, index_dir, *extra), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def built(corpus, tmp_path):
    """A corpus with a live index, and one new document waiting to be indexed."""
    index_dir = tmp_path / "idx"
    build(corpus, index_dir)
    (corpus / "new.md").write_text(NEW_DOC, encoding="utf-8")
    return corpus, index_dir


# ---------------------------------------------------------------- F1, F2: SIGKILL

@pytest.mark.slow  # a dozen SIGKILLed index builds (~13 s); F2 covers every write step in the fast suite
def test_F1_kill_loop_reduced(tmp_path):
    """A few runs of the loop (the report runs 100+: `python eval/killloop.py --runs 100`)."""
    stats = killloop.loop(int(os.environ.get("KILLLOOP_RUNS", "4")), seed=int(time.time()), workdir=tmp_path,
                          log=lambda m: None)
    assert stats["corruptions"] == 0 and stats["failed_next_builds"] == 0, stats["problems"]
    assert stats["failed_without_kill"] == 0, stats["problems"]
    assert stats["tmp_left_after_next_build"] == 0


# An incremental build's filesystem steps: the vector segment (fsync + rename of its .faiss and its
# .ids.npy, fsync of the store directory), then the generation: fsync docids.npy, fsync manifest, fsync
# tmp dir, rename, fsync index dir, fsync CURRENT.tmp, replace CURRENT, fsync index dir. (The chunk
# store's SQLite commit and the keyword store's tantivy commit come before them and sync in C / Rust;
# the time-based kills of test_F1 and eval/killloop.py cover them.)
@pytest.mark.parametrize("step,swapped", [(1, False), (4, False), (9, False), (10, False), (12, False), (13, True)],
                         ids=["first-fsync", "mid-segment", "before-rename", "after-rename", "before-swap", "after-swap"])
def test_F2_kill_at_each_write_step_serves_a_complete_generation(built, step, swapped):
    corpus, index_dir = built
    before = live(index_dir)
    p = start_child(corpus, index_dir, "--die-at", str(step))
    p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL
    assert (live(index_dir) != before) == swapped
    idx = load_index(index_dir, "fake")  # verifies manifest, checksums and counts
    assert any("感受野" in c.text for c in idx.chunks) == swapped
    report = build(corpus, index_dir)  # the next run succeeds and cleans up
    assert report.up_to_date == swapped and "new.md" in load_index(index_dir).manifest["files"]
    names = entries(index_dir)
    assert not [n for n in names if n.endswith(".tmp")]
    assert len([n for n in names if n.startswith("gen-")]) <= 2  # a renamed-but-never-live generation is gone


# ---------------------------------------------------------------- F3: disk full

def test_F3_disk_full_in_a_child_with_rlimit_fsize(built):
    corpus, index_dir = built
    before, listing = live(index_dir), entries(index_dir)
    res = killloop.run_child(corpus, index_dir, "--fsize", "8192", timeout=120)
    assert res.returncode == DiskFull.exit_code, res.stderr[-500:]
    assert "disk full" in res.stderr and "Traceback" not in res.stderr
    assert live(index_dir) == before and entries(index_dir) == listing  # old index untouched, temps removed
    assert load_index(index_dir, "fake")
    assert build(corpus, index_dir).added == ["new.md"]


@pytest.mark.parametrize("k", range(1, 9))  # the 9 fsyncs of an incremental build; the 9th comes after the swap
def test_F3_disk_full_at_any_write_step_is_clean(built, monkeypatch, k):
    corpus, index_dir = built
    before, listing = live(index_dir), entries(index_dir)
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == k:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFull, match="disk full"):
        build(corpus, index_dir)
    assert live(index_dir) == before and entries(index_dir) == listing


@pytest.mark.parametrize("where,error", [
    ("write_rows", sqlite3.OperationalError("database or disk is full")),
    ("write_rows", sqlite3.OperationalError("disk I/O error")),
    ("faiss", RuntimeError("Error in faiss::write_index: write error in vectors.faiss: 100 != 2048 (No space left on device)")),
    ("bm25", OSError(errno.EFBIG, "File too large")),
], ids=["sqlite-full", "sqlite-ioerr", "faiss", "bm25-efbig"])
def test_F3_library_disk_full_errors_become_disk_full(built, monkeypatch, where, error):
    from rag import index as index_mod
    from rag.keyword_index import KeywordWriter

    corpus, index_dir = built
    before, listing = live(index_dir), entries(index_dir)

    def fail(*a, **k):
        raise error

    if where == "write_rows":
        monkeypatch.setattr(index_mod, "write_rows", fail)
    elif where == "faiss":
        import faiss

        monkeypatch.setattr(faiss, "write_index", fail)
    else:
        monkeypatch.setattr(KeywordWriter, "add", fail)
    with pytest.raises(DiskFull):
        build(corpus, index_dir)
    assert live(index_dir) == before and entries(index_dir) == listing


# ---------------------------------------------------------------- F4-F6: damaged index files

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate-1":
        path.write_bytes(data[:-1])
    elif how == "flip":
        b = bytearray(data)
        b[len(b) // 3] ^= 0x01
        path.write_bytes(bytes(b))
    elif how == "zero-length":
        path.write_bytes(b"")
    else:
        path.write_bytes(os.urandom(len(data)))


@pytest.mark.parametrize("how", ["truncate-1", "flip", "zero-length", "random"])
@pytest.mark.parametrize("target", ["vector segment", "docids.npy"])
def test_F4_F5_damaged_artifact_is_refused_by_checksum_with_a_clear_message(built, target, how):
    corpus, index_dir = built
    path = artifact(index_dir, target)
    _damage(path, how)
    with pytest.raises(IndexCorrupt, match=rf"{path.name} fails its checksum .*rag index --rebuild"):
        load_index(index_dir, "fake")


@pytest.mark.parametrize("how", ["truncate-1", "flip", "zero-length", "random"])
def test_F4_F5_damaged_chunk_store_is_a_clear_error_on_load_or_read(built, how):
    """The shared chunk table changes with every build, so it has no file checksum: SQLite refuses a
    damaged file, the generation's newest row must be there, and every row read is checked (crc)."""
    corpus, index_dir = built
    _damage(artifact(index_dir, "chunks.sqlite"), how)
    with pytest.raises(IndexCorrupt, match=r"chunks.sqlite.*(checksum|malformed|not a database|no such table|truncated|lacks|missing).*rag index --rebuild"):
        list(load_index(index_dir, "fake").chunks)


def test_F4_cli_reports_corruption_in_one_line_and_the_next_index_run_repairs_it(built, settings, monkeypatch, capsys):
    from rag import cli

    corpus, index_dir = built
    _damage(artifact(index_dir, "vector segment"), "truncate-1")
    s = replace(settings, **{"index_dir": index_dir})
    monkeypatch.setenv("RAG_INDEX_DIR", str(index_dir))
    flags = ["--corpus", str(s.corpus_dir), "--embedder", "fake", "--generator", "fake"]
    assert cli.main(["search", "感受野", *flags]) == IndexCorrupt.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and ".faiss fails its checksum" in err and len(err.splitlines()) == 1
    assert cli.main(["index", *flags]) == 0  # rebuilds from scratch (warned), no crash loop
    assert "rebuilding from scratch" in capsys.readouterr().err
    assert cli.main(["search", "感受野", "--json", *flags]) == 0


def test_F5_chunk_store_and_vectors_from_different_builds_are_never_served_together(built):
    import json

    corpus, index_dir = built
    gen_a = current_generation(index_dir)
    build(corpus, index_dir)  # gen B has one more document
    gen_b = current_generation(index_dir)
    shutil.copy(gen_a / "docids.npy", gen_b / "docids.npy")
    m = json.loads((gen_b / "manifest.json").read_text())
    data = (gen_b / "docids.npy").read_bytes()  # forge the checksum too: the count check still holds
    m["artifacts"]["docids.npy"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (gen_b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexCorrupt, match="disagree on the chunk count"):
        load_index(index_dir)


@pytest.mark.parametrize("damage", ["manifest-missing", "manifest-invalid", "current-missing-dir", "current-escape",
                                    "current-empty"])
def test_F6_bad_manifest_or_current_names_the_file_and_a_rebuild_recovers(built, damage):
    corpus, index_dir = built
    gen = current_generation(index_dir)
    if damage == "manifest-missing":
        (gen / "manifest.json").unlink()
    elif damage == "manifest-invalid":
        (gen / "manifest.json").write_text('{"format_version": 2, "embed')
    elif damage == "current-missing-dir":
        (index_dir / CURRENT).write_text("gen-20990101-000000-1-000000\n")
    elif damage == "current-escape":
        (index_dir / CURRENT).write_text("../../etc\n")
    else:
        (index_dir / CURRENT).write_text("")
    with pytest.raises(IndexCorrupt) as e:
        load_index(index_dir)
    assert ("manifest.json" if damage.startswith("manifest") else CURRENT) in str(e.value)
    assert build(corpus, index_dir).chunks and load_index(index_dir, "fake")


# ---------------------------------------------------------------- F7-F10: models

def test_F7_missing_embedding_model_fails_fast_naming_it(settings, tmp_path):
    from rag.assistant import Assistant

    a = Assistant(replace(settings, **{"embedder": str(tmp_path / "no-such-model")}))
    t0 = time.monotonic()
    with pytest.raises(ModelNotInstalled, match="no-such-model"):
        a.search("感受野")
    assert time.monotonic() - t0 < 5  # no torch import, no hub lookup


@pytest.mark.parametrize("case", ["other-name-same-dim", "other-dim", "same-name-other-build"])
def test_F8_embedder_mismatch_refuses_queries(built, settings, case, monkeypatch, capsys):
    from rag import cli
    from rag.assistant import Assistant

    corpus, index_dir = built
    configured, emb = {"other-name-same-dim": ("other-embedder", FakeEmbedder(model_id="other-embedder")),
                       "other-dim": ("fake", FakeEmbedder(dim=32)),
                       "same-name-other-build": ("fake", FakeEmbedder())}[case]
    if case == "same-name-other-build":
        emb.fingerprint = "another-build"
        m = load_index(index_dir).manifest  # the live index records the build it was made with
        assert m["embedder"]["fingerprint"] == ""
        gen = current_generation(index_dir)
        import json

        m["embedder"]["fingerprint"] = "original-build"
        (gen / "manifest.json").write_text(json.dumps(m))
    s = replace(settings, **{"index_dir": index_dir, "embedder": configured})
    a = Assistant(s, embedder=emb, generator=FakeGenerator())
    with pytest.raises(EmbedderMismatch, match="rebuild"):
        a.search("感受野")
    assert cli.main(["ask", "感受野是什么"], assistant=a) == EmbedderMismatch.exit_code
    assert "rag index --rebuild" in capsys.readouterr().err


def test_F9_corrupt_gguf_is_a_typed_error_and_retrieval_still_works(settings, tmp_path):
    pytest.importorskip("llama_cpp")
    from rag.assistant import Assistant
    from rag.ui import Backend

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    s = replace(settings, **{"generator": str(bad)})
    a = Assistant(s, embedder=FakeEmbedder())
    assert a.search("测试的时候要用 Dropout 吗?").hits  # retrieval does not need the LLM
    with pytest.raises(ModelNotInstalled, match="cannot load"):
        a.answer("测试的时候要用 Dropout 吗?")
    backend = Backend(s, embedder=FakeEmbedder())
    backend.warm_up()  # what the UI does at start: an error state with a message, no trace
    assert backend.state == "error" and "cannot load" in backend.error and "Traceback" not in backend.status_html()


class BreaksMidStream(FakeGenerator):
    def __init__(self):
        super().__init__()
        self.broken = True

    def stream(self, messages, max_tokens=256, prefix="", passages=()):
        if not self.broken:
            yield from super().stream(messages, max_tokens, prefix, passages)
            return
        yield "Dropout 在测试时"
        raise RuntimeError("llama_decode returned -3")


def test_F10_llm_failing_mid_stream_is_a_typed_error_and_the_next_question_works(settings, monkeypatch, capsys):
    from rag import cli
    from rag.assistant import Assistant

    gen = BreaksMidStream()
    a = Assistant(settings, embedder=FakeEmbedder(), generator=gen)
    with pytest.raises(GenerationError, match="llama_decode returned -3"):
        a.answer("测试的时候要用 Dropout 吗?")
    assert cli.main(["ask", "测试的时候要用 Dropout 吗?"], assistant=a) == GenerationError.exit_code
    assert "error: the language model failed" in capsys.readouterr().err
    gen.broken = False
    assert a.answer("测试的时候要用 Dropout 吗?").sources


# ---------------------------------------------------------------- F11-F14: concurrency and immutability

def test_F11_rebuilds_while_queries_run_fail_no_query(built, settings):
    from rag.assistant import Assistant

    corpus, index_dir = built
    s = replace(settings, **{"index_dir": index_dir})
    a = Assistant(s, embedder=FakeEmbedder(), generator=FakeGenerator())
    stop, done, failures = threading.Event(), [0], []

    def query_loop(q):
        while not stop.is_set():
            try:
                ans = a.answer(q)
                assert ans.hits
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted
                failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=query_loop, args=(q,)) for q in ("测试的时候要用 Dropout 吗?", "梯度爆炸怎么办?")]
    for t in threads:
        t.start()
    try:
        for i in range(3):
            (corpus / f"extra-{i}.md").write_text(f"1. 额外问题{i}?\n额外答案编号{i}号，内容独一无二。\n", encoding="utf-8")
            res = killloop.run_child(corpus, index_dir, timeout=120)
            assert res.returncode == 0, res.stderr[-500:]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == [] and done[0] > 0
    assert any("额外答案编号2号" in h.chunk.text for h in a.search("额外问题2").hits)  # the new docs, after the swap


def test_F12_second_rebuild_refuses_while_the_first_holds_the_lock(built):
    corpus, index_dir = built
    before = live(index_dir)
    first = start_child(corpus, index_dir, "--slow", "60")
    try:
        assert first.stdout.readline().strip() == "embedding"  # inside the lock
        second = killloop.run_child(corpus, index_dir, timeout=120)
        assert second.returncode == IndexLocked.exit_code and "lock held" in second.stderr
    finally:
        first.kill()
        first.communicate()
    assert live(index_dir) == before


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def test_F13_read_only_index_dir_is_a_clear_error_and_nothing_is_written(built):
    corpus, index_dir = built
    listing = {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()}
    cmd = killloop.child_cmd(corpus, index_dir)
    if os.geteuid() != 0:
        os.chmod(index_dir, 0o555)
        (index_dir / ".lock").chmod(0o444)
    elif _unshare_works():  # root ignores permissions: mount the index read-only in a private namespace
        d = str(index_dir)
        cmd = ["unshare", "-rm", "sh", "-c", f'mount --bind "{d}" "{d}" && mount -o remount,ro,bind "{d}" && exec "$0" "$@"',
               *cmd]
    else:
        pytest.skip("running as root without user namespaces: cannot make a directory read-only")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(index_dir, 0o755)
    assert res.returncode == RagError.exit_code, res.stderr[-500:]
    assert f"cannot write {index_dir}" in res.stderr and "Traceback" not in res.stderr
    assert ("Read-only file system" in res.stderr) or ("Permission denied" in res.stderr)
    assert {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()} == listing
    assert load_index(index_dir, "fake")  # reading a read-only index still works


def test_F14_a_rebuild_never_touches_the_live_generation_in_place(built):
    corpus, index_dir = built
    gen = current_generation(index_dir)

    def snapshot():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
                for p in gen.iterdir()}

    before = snapshot()
    build(corpus, index_dir)
    assert current_generation(index_dir) != gen and snapshot() == before


# ---------------------------------------------------------------- F15, F16: durability order, SIGTERM

def test_F15_fsync_ordering(built, monkeypatch):
    corpus, index_dir = built
    paths, log = {}, []
    real_open, real_fsync, real_rename, real_replace = os.open, os.fsync, os.rename, os.replace

    def op(*a, **k):
        fd = real_open(*a, **k)
        paths[fd] = Path(a[0])
        return fd

    monkeypatch.setattr(os, "open", op)
    monkeypatch.setattr(os, "fsync", lambda fd: (log.append(("fsync", paths.get(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "rename", lambda a, b: (log.append(("rename", Path(a), Path(b))), real_rename(a, b))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (log.append(("replace", Path(a), Path(b))), real_replace(a, b))[1])
    gen = build(corpus, index_dir).generation
    tmp, final = index_dir / f"{gen}.tmp", index_dir / gen

    def at(entry) -> int:
        return log.index(entry)

    m = load_index(index_dir).manifest
    store = index_dir / m["store"]["dir"]
    data = [at(("fsync", store / f"{s['name']}{ext}.tmp")) for s in m["vector_index"]["segments"] if s["role"] == "delta"
            for ext in (".faiss", ".ids.npy")] + [at(("fsync", store)), at(("fsync", tmp / "docids.npy"))]
    manifest, tmp_dir = at(("fsync", tmp / "manifest.json")), at(("fsync", tmp))
    rename = at(("rename", tmp, final))
    dir_after_rename = log.index(("fsync", index_dir), rename)
    current_tmp = at(("fsync", index_dir / "CURRENT.tmp"))
    swap = at(("replace", index_dir / "CURRENT.tmp", index_dir / CURRENT))
    dir_after_swap = log.index(("fsync", index_dir), swap)
    assert max(data) < manifest < tmp_dir < rename < dir_after_rename < current_tmp < swap < dir_after_swap


def test_F16_sigterm_during_a_rebuild_stops_promptly_and_cleanly(built):
    corpus, index_dir = built
    before = live(index_dir)
    p = start_child(corpus, index_dir, "--slow", "60")
    assert p.stdout.readline().strip() == "embedding"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert time.monotonic() - t0 < 5 and p.returncode == 130 and "interrupted" in err
    assert live(index_dir) == before and not [n for n in entries(index_dir) if n.endswith(".tmp")]
    assert build(corpus, index_dir).added == ["new.md"]  # lock released
