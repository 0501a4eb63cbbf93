"""Generations of the on-disk index: directories, the CURRENT pointer, manifests, checksums, the write
lock and the cleanup of what a crashed or superseded build left.

Layout of `index/`:
    CURRENT                 name of the live generation (replaced atomically)
    gen-<time>-<pid>/       one complete build: manifest.json, chunks.sqlite, vectors.faiss
    keyword-<time>-<pid>/   the keyword legs' inverted index (tantivy), shared by the generations
    .lock                   held (flock) by the one process allowed to write
A build writes a new generation in a `.tmp` directory, fsyncs it, renames it, then swaps CURRENT;
a crash at any point leaves the previous generation serving. Generation directories are never
modified in place. The keyword store is the exception, because rewriting it per build would cost
minutes at a million chunks: a build adds only its new chunks' documents in one atomic tantivy
commit, each generation sees exactly the documents its chunk table names (rag.keyword_index), and a
store built with other analyzers, or by `--rebuild`, is replaced by a new directory.
What goes into a generation (scanning, chunking, embedding) is rag.index's job.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .atomic import fsync_path, rename_durably, replace_text
from .chunk_store import read_docid_map, write_chunks
from .chunking import Chunk
from .errors import DiskFull, IndexCorrupt, IndexLocked, RagError
from .keyword_index import KeywordWriter, read_meta
from .keyword_index import fingerprint as keyword_fingerprint
from .vectors import build_vector_index, drop_vector_index

FORMAT_VERSION = 3  # 3: keyword legs in a tantivy store (2 had bm25.json per generation)
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
CHUNKS_DB = "chunks.sqlite"
VECTORS = "vectors.faiss"
KEYWORD_PREFIX = "keyword-"
KEEP_GENERATIONS = 2  # the live one and its predecessor (readers may still hold it)
# What a generation's vectors were built as; manifests written before it existed were this.
DEFAULT_VECTOR_REQUEST = {"index": "auto", "store": "faiss"}


# ---------------------------------------------------------------- generations

def current_generation(index_dir: Path) -> Path | None:
    try:
        name = (Path(index_dir) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    if not name or "/" in name or name.startswith("."):
        raise IndexCorrupt(f"{index_dir / CURRENT} is invalid; run `rag index --rebuild`")
    gen = Path(index_dir) / name
    if not gen.is_dir():
        raise IndexCorrupt(f"{index_dir / CURRENT} points at missing {name}; run `rag index --rebuild`")
    return gen


def read_manifest(gen: Path) -> dict:
    try:
        manifest = json.loads((gen / MANIFEST).read_text())
    except FileNotFoundError:
        raise IndexCorrupt(f"{gen / MANIFEST} is missing; run `rag index --rebuild`") from None
    except (ValueError, UnicodeDecodeError):
        raise IndexCorrupt(f"{gen / MANIFEST} is not valid JSON; run `rag index --rebuild`") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorrupt(f"{gen / MANIFEST}: format {manifest.get('format_version')} != {FORMAT_VERSION}; "
                           "run `rag index --rebuild`")
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


QUICK_VERIFY_BYTES = 64 * 2**20  # from this size a load trusts an unchanged size + mtime (see below)


def verify_artifacts(gen: Path, manifest: dict, full: bool = False) -> None:
    """Check every artifact against the manifest. Hashing is skipped on load (`full=False`) for large
    files whose size and modification time are those recorded at build time: at a million chunks
    the artifacts are gigabytes and hashing them took longer than the whole load target (2 s).
    Any other change (truncation, a rewrite, a copy) is hashed; `rag index` always hashes."""
    for name, meta in manifest.get("artifacts", {}).items():
        p = gen / name
        if not p.exists():
            raise IndexCorrupt(f"{p} is missing; run `rag index --rebuild`")
        st = p.stat()
        if st.st_size != meta["bytes"]:
            raise IndexCorrupt(f"{p} fails its checksum (truncated or corrupted); run `rag index --rebuild`")
        if not full and st.st_size >= QUICK_VERIFY_BYTES and meta.get("mtime_ns") == st.st_mtime_ns:
            continue
        if file_sha256(p) != meta["sha256"]:
            raise IndexCorrupt(f"{p} fails its checksum (truncated or corrupted); run `rag index --rebuild`")


# ---------------------------------------------------------------- the lock, errors, cleanup

@contextmanager
def write_lock(index_dir: Path, wait: float = 0.0):
    import fcntl

    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(index_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # read-only or foreign index directory: say so, write nothing
        raise _write_error(e, index_dir) or RagError(f"cannot write {index_dir}: {e.strerror or e}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexLocked(f"another `rag index` is writing {index_dir} (lock held); try again when it finishes") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


_DISK_FULL = ("No space left", "File too large", "Disk quota", "database or disk is full", "disk I/O error")
_NO_ACCESS = ("Permission denied", "Read-only file system", "attempt to write a readonly database")


def _write_error(e: BaseException, index_dir: Path) -> RagError | None:
    """The typed error for a failed index write, or None when it is not about the disk. SQLite and
    FAISS report a full disk (or RLIMIT_FSIZE) in their own words, not as an OSError."""
    code, text = getattr(e, "errno", None), str(e)
    if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or any(t in text for t in _DISK_FULL):
        return DiskFull(f"disk full while writing {index_dir}; the previous index is untouched")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or any(t in text for t in _NO_ACCESS):
        reason = getattr(e, "strerror", None) or next(t for t in _NO_ACCESS if t in text)
        return RagError(f"cannot write {index_dir}: {reason}; the previous index is untouched")
    return None


def cleanup_stale(index_dir: Path, previous: str | None = None) -> None:
    """Remove leftovers of crashed builds and generations beyond the ones kept. Caller holds the lock.

    Kept: the live generation and `previous`, the one live before it (a reader may still be loading
    it); a generation a killed build renamed but never made live goes. Without `previous` the newest
    generations stand in for it."""
    try:
        live = current_generation(index_dir)
    except IndexCorrupt:
        live = None
    for p in index_dir.iterdir():
        if p.name.endswith(".tmp") or p.name.startswith(CURRENT + ".tmp"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    gens = sorted((p for p in index_dir.glob("gen-*") if p.is_dir()), key=lambda p: p.name)
    keep = {live.name} if live else set()
    keep.update([previous] if previous else (p.name for p in gens[-KEEP_GENERATIONS:]))
    for p in gens:
        if p.name not in keep:
            _drop_external(p)
            shutil.rmtree(p, ignore_errors=True)
    # Keyword stores no remaining generation uses (replaced by a rebuild, or left by a crashed one).
    used = set()
    for p in index_dir.glob("gen-*"):
        try:
            used.add(json.loads((p / MANIFEST).read_text()).get("keyword", {}).get("dir"))
        except (OSError, ValueError, AttributeError):
            if p.is_dir():
                return  # a generation we cannot read may use any of them: keep all
    for p in index_dir.glob(KEYWORD_PREFIX + "*"):
        if p.is_dir() and p.name not in used:
            shutil.rmtree(p, ignore_errors=True)


def _drop_external(gen: Path) -> None:
    """Drop what a generation keeps outside its directory (a collection on a Milvus server)."""
    try:
        drop_vector_index(json.loads((gen / MANIFEST).read_text()).get("vector_index", {}), gen)
    except Exception:  # best effort: an unreachable server must not block a local build
        pass


def _stamp() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6:06d}"


# ---------------------------------------------------------------- the shared keyword store

def keywords_usable(index_dir: Path, manifest: dict) -> bool:
    """Whether the keyword store the manifest names is there and was built with today's analyzers."""
    kw = manifest.get("keyword") or {}
    if kw.get("store") == "milvus":  # the keyword legs live in the generation's Milvus collection
        return kw.get("fingerprint") == keyword_fingerprint()
    return bool(kw.get("dir")) and read_meta(index_dir / kw["dir"]) == keyword_fingerprint() == kw.get("fingerprint")


def update_keywords(index_dir: Path, old_gen: Path | None, old_manifest: dict | None, chunks: list[Chunk],
                    progress: Callable | None = None) -> tuple[dict, np.ndarray]:
    """Bring the keyword store up to `chunks` (the next generation's rows) in one commit.

    Chunks the live generation had keep their documents; new chunks get new docids and documents.
    Documents only the generation before the live one could see (`removed` by the live build) are
    deleted, and so are those a crashed build left (docid >= the live `next_docid`). With no live
    store, or one built with other analyzers, a new store is made. Returns the manifest entry and the
    docid of each chunk. Caller holds the lock."""
    old = (old_manifest or {}).get("keyword")
    fp = keyword_fingerprint()
    reuse = old_gen is not None and old_manifest is not None and keywords_usable(index_dir, old_manifest)
    path = index_dir / old["dir"] if reuse else index_dir / (KEYWORD_PREFIX + _stamp())
    known = read_docid_map(old_gen / CHUNKS_DB) if reuse else {}
    next_docid = int(old["next_docid"]) if reuse else 0
    docids = np.empty(len(chunks), dtype=np.int64)
    new_rows = []
    for i, c in enumerate(chunks):
        d = known.get(c.id)
        if d is None:
            d, next_docid = next_docid, next_docid + 1
            new_rows.append(i)
        docids[i] = d
    writer = None
    try:
        writer = KeywordWriter(path, create=not reuse)
        if reuse:
            writer.delete_from(int(old["next_docid"]))  # issued before the adds: they are not affected
            writer.delete(old.get("removed", []))
        writer.add(docids[new_rows], [chunks[i].embed_text() for i in new_rows], progress)
        writer.commit()
    except BaseException as e:
        if writer is not None:
            try:
                writer.rollback()
            except Exception:
                pass
        if not reuse:
            shutil.rmtree(path, ignore_errors=True)
        typed = _write_error(e, index_dir) if isinstance(e, (OSError, ValueError, RuntimeError)) else None
        if typed is not None:
            raise typed from None
        raise
    kept = set(docids.tolist())
    removed = sorted(d for d in known.values() if d not in kept)  # the live generation still shows them
    return {"dir": path.name, "fingerprint": fp, "next_docid": next_docid, "removed": removed}, docids


# ---------------------------------------------------------------- writing a generation

def write_generation(index_dir: Path, chunks: list[Chunk], vectors: np.ndarray, manifest: dict,
                     vector_request: dict | None = None, docids: Sequence[int] | None = None) -> Path:
    """Write a complete generation, then switch CURRENT to it. Caller holds the lock; the keyword
    store already has the documents `docids` (row -> document) name (update_keywords)."""
    name = f"gen-{_stamp()}"
    tmp = index_dir / (name + ".tmp")
    final = index_dir / name
    try:
        tmp.mkdir(parents=True)
        manifest = _write_artifacts(tmp, name, chunks, vectors, manifest, vector_request, docids)
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
        fsync_path(tmp / MANIFEST)
        rename_durably(tmp, final)
        replace_text(index_dir / CURRENT, name + "\n")  # via CURRENT.tmp, which cleanup_stale removes
    except BaseException as e:
        _discard(index_dir, tmp, final, name)
        typed = _write_error(e, index_dir) if isinstance(e, (OSError, sqlite3.Error, RuntimeError)) else None
        if typed is not None:
            raise typed from None
        raise
    return final


def _write_artifacts(tmp: Path, name: str, chunks: list[Chunk], vectors: np.ndarray, manifest: dict,
                     vector_request: dict | None, docids: Sequence[int] | None) -> dict:
    """The chunk table and the vector index into `tmp`, each fsynced; returns `manifest` with them
    recorded (sha256, size, mtime)."""
    write_chunks(tmp / CHUNKS_DB, chunks, vectors, range(len(chunks)) if docids is None else docids)
    req = dict(vector_request or DEFAULT_VECTOR_REQUEST)
    opts = {k: v for k, v in req.items() if k not in ("index", "store") and v}
    texts = [c.embed_text() for c in chunks] if req["store"] == "milvus" else None
    vindex = build_vector_index(req["index"], manifest["embedder"]["dim"], vectors, store=req["store"], gen_dir=tmp,
                                generation=name, texts=texts, **opts)
    vart = getattr(vindex, "artifact", VECTORS)
    vindex.save(tmp / vart)
    manifest = dict(manifest, vector_index=vindex.params(), vector_request=req, counts={"chunks": len(chunks)},
                    artifacts={})
    for art in (CHUNKS_DB, vart):
        fsync_path(tmp / art)
        st = (tmp / art).stat()  # rename keeps mtime_ns: a load can tell an untouched file (verify_artifacts)
        manifest["artifacts"][art] = {"sha256": file_sha256(tmp / art), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return manifest


def _discard(index_dir: Path, tmp: Path, final: Path, name: str) -> None:
    """Nothing of a failed or interrupted build stays behind, unless it already went live."""
    shutil.rmtree(tmp, ignore_errors=True)
    (index_dir / (CURRENT + ".tmp")).unlink(missing_ok=True)
    try:
        live = (index_dir / CURRENT).read_text().strip()
    except OSError:
        live = None
    if final.exists() and live != name:
        shutil.rmtree(final, ignore_errors=True)
