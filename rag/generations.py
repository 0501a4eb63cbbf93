"""Index generations on disk: the live-generation pointer, manifests and their checksums, the write
lock, and cleanup of what a crashed or superseded build left.

Layout of `index/`:
    CURRENT                 name of the live generation (replaced atomically)
    gen-<time>-<pid>/       one generation: manifest.json and docids.npy (its rows' chunk docids)
    store-<time>-<pid>/     the chunks (chunks.sqlite: text, metadata, embedding per docid) and the
                            FAISS vector segments (rag.vector_segments), shared by the generations
    keyword-<time>-<pid>/   the keyword legs' inverted index (tantivy), shared by the generations
    .lock                   held (flock) by the one process allowed to write
A generation is a small directory written in `.tmp`, fsynced, renamed, then made live by swapping
CURRENT; it is never modified. The bulky data sits in the shared stores, which a build changes only
by appending: its new chunks are rows with new docids (one SQLite transaction), their vectors a new
segment file, their documents one tantivy commit; then the generation that names them goes live. A
crash at any point leaves the previous generation serving: what the crashed build appended carries
docids at or past the live generation's `next_docid`, which no generation shows and the next build
deletes; segment files no generation names are removed by cleanup.

What a reader holding an older generation sees: rows and documents are deleted only when no kept
generation (the live one and its predecessor) shows them, so a reader that loaded generation G gets
exactly G's results while G is live and through the next build; the build after that (the second
after G) deletes, when it starts writing, the rows only G and older generations showed. Reading such
a row then raises IndexCorrupt ("reload"); rag.assistant reloads whenever CURRENT changes.
A keyword store built with other analyzers is replaced by a new directory, and so is every store on
`--rebuild`, another embedder (which requires it) or a damaged live generation. What goes into a generation (scanning, chunking, embedding) is rag.index's job.
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
from typing import Callable

import numpy as np

from .atomic import fsync_path, rename_durably, replace_text
from .chunk_store import STORE_DB, ChunkStore, read_vectors, write_docids
from .errors import DiskFull, IndexCorrupt, IndexLocked, RagError
from .keyword_index import KeywordWriter, read_meta
from .keyword_index import fingerprint as keyword_fingerprint
from .vector_segments import MAX_DELTAS, delta_vectors, needs_compaction, segment_files, write_segment
from .vectors import FaissFlatIndex, build_vector_index, drop_vector_index

FORMAT_VERSION = 4  # 4: chunks and vector segments shared by generations (3 wrote them per generation)
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
DOCIDS = "docids.npy"
VECTORS = "vectors.faiss"
KEYWORD_PREFIX = "keyword-"
STORE_PREFIX = "store-"
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
    Any other change (truncation, a rewrite, a copy) is hashed; `rag index` hashes the generation's
    own files. The shared vector segments are written once and never changed, so a build checks
    them by the same rule as a load: hashing a 1M-chunk base (~0.5 GB) on every added file would
    cost more than the whole add. The chunk store changes with every build and has no checksum:
    SQLite reports damage, and a row a generation names but the store lacks is an IndexCorrupt."""
    items = [(gen / name, meta, full) for name, meta in manifest.get("artifacts", {}).items()]
    store = (manifest.get("store") or {}).get("dir")
    if store:
        if not (gen.parent / store / STORE_DB).is_file():
            raise IndexCorrupt(f"{gen.parent / store / STORE_DB} is missing; run `rag index --rebuild`")
        for seg in (manifest.get("vector_index") or {}).get("segments", []):
            items += [(gen.parent / store / name, meta, False) for name, meta in seg.get("files", {}).items()]
    for p, meta, hash_all in items:
        if not p.exists():
            raise IndexCorrupt(f"{p} is missing; run `rag index --rebuild`")
        st = p.stat()
        if st.st_size != meta["bytes"]:
            raise IndexCorrupt(f"{p} fails its checksum (truncated or corrupted); run `rag index --rebuild`")
        if not hash_all and st.st_size >= QUICK_VERIFY_BYTES and meta.get("mtime_ns") == st.st_mtime_ns:
            continue
        if file_sha256(p) != meta["sha256"]:
            raise IndexCorrupt(f"{p} fails its checksum (truncated or corrupted); run `rag index --rebuild`")


def _artifact(p: Path, sync: bool = True) -> dict:
    if sync:
        fsync_path(p)
    st = p.stat()  # rename keeps mtime_ns: a load can tell an untouched file (verify_artifacts)
    return {"sha256": file_sha256(p), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


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


@contextmanager
def write_error(index_dir: Path):
    """Turn a full disk or a read-only directory while writing the shared stores into its typed error."""
    try:
        yield
    except (OSError, sqlite3.Error, RuntimeError) as e:
        typed = _write_error(e, index_dir)
        if typed is not None:
            raise typed from None
        raise


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
    # Stores no generation uses; in the others, segment files no generation names (a compaction's
    # predecessors, a crashed build's segment) and temporary files.
    stores: dict[str, set[str]] = {}
    for p in index_dir.glob("gen-*"):
        m = json.loads((p / MANIFEST).read_text())
        names = stores.setdefault((m.get("store") or {}).get("dir"), set())
        for seg in (m.get("vector_index") or {}).get("segments", []):
            names.update(segment_files(seg))
    for p in index_dir.glob(STORE_PREFIX + "*"):
        if not p.is_dir():
            continue
        if p.name not in stores:
            shutil.rmtree(p, ignore_errors=True)
            continue
        for f in p.iterdir():
            if f.name.endswith(".tmp") or (f.name.startswith("vec-") and f.name not in stores[p.name]):
                f.unlink(missing_ok=True)


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


def update_keywords(index_dir: Path, old_manifest: dict | None, add: tuple[np.ndarray, list[str]],
                    all_texts: Callable[[], tuple[np.ndarray, list[str]]], next_docid: int, removed: list[int],
                    progress: Callable | None = None) -> dict:
    """Bring the keyword store up to the next generation in one commit: add the documents of its new
    chunks (`add`: docids, texts) and delete those of rows no kept generation shows: the live
    manifest's `removed` (only the generation before it showed them) and docids at or past its
    `next_docid` (a crashed build's). With no usable store (none yet, other analyzers) a new one is
    filled with every row (`all_texts`). Returns the manifest entry. Caller holds the lock."""
    old = (old_manifest or {}).get("keyword")
    reuse = old_manifest is not None and keywords_usable(index_dir, old_manifest)
    path = index_dir / old["dir"] if reuse else index_dir / (KEYWORD_PREFIX + _stamp())
    writer = None
    try:
        writer = KeywordWriter(path, create=not reuse)
        if reuse:
            writer.delete_from(int(old["next_docid"]))  # issued before the adds: they are not affected
            writer.delete(old.get("removed", []))
        docids, texts = add if reuse else all_texts()
        writer.add(docids, texts, progress)
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
    return {"dir": path.name, "fingerprint": keyword_fingerprint(), "next_docid": int(next_docid),
            "removed": [int(d) for d in removed]}


# ---------------------------------------------------------------- the shared store: chunks and vectors

def new_store(index_dir: Path) -> str:
    name = STORE_PREFIX + _stamp()
    (index_dir / name).mkdir(parents=True)
    return name


def update_vectors(store_dir: Path, old_vp: dict | None, request: dict, dim: int, docids: np.ndarray,
                   new_docids: np.ndarray, new_vectors: np.ndarray) -> dict:
    """The next generation's FAISS segments: the live ones plus a delta of the new vectors, deltas merged
    when too many, or a new base from the stored vectors (rag.vector_segments.needs_compaction). The
    chunk store must already hold every row. Returns the manifest's vector_index entry."""
    req = dict(request)
    opts = {k: v for k, v in req.items() if k not in ("index", "store") and v}
    segments = list((old_vp or {}).get("segments", []))
    if needs_compaction(segments, req, len(docids), len(new_docids), dim):
        vectors = read_vectors(store_dir / STORE_DB, docids, dim)
        base = build_vector_index(req["index"], dim, vectors, **opts)
        segments = [_record(store_dir, write_segment(store_dir, "vec-" + _stamp(), base, docids, "base"))]
    elif len(new_docids):
        vecs, ids = new_vectors, new_docids
        if sum(s["role"] == "delta" for s in segments) >= MAX_DELTAS:  # one file instead of many
            old_vecs, old_ids = delta_vectors(store_dir, segments)
            keep = np.isin(old_ids, docids)
            vecs, ids = np.concatenate([old_vecs[keep], new_vectors]), np.concatenate([old_ids[keep], new_docids])
            segments = [s for s in segments if s["role"] == "base"]
        delta = FaissFlatIndex(dim)
        delta.add(vecs)
        segments.append(_record(store_dir, write_segment(store_dir, "vec-" + _stamp(), delta, ids, "delta")))
    base = next(s for s in segments if s["role"] == "base")
    return dict(base["params"], store="faiss", segments=segments)


def _record(store_dir: Path, entry: dict) -> dict:
    return dict(entry, files={f: _artifact(store_dir / f, sync=False) for f in segment_files(entry)})  # synced


# ---------------------------------------------------------------- writing a generation

def write_generation(index_dir: Path, manifest: dict, docids: np.ndarray, vector_request: dict | None = None,
                     vector_index: dict | None = None) -> Path:
    """Write a generation (its docid list and manifest), then switch CURRENT to it. Caller holds the
    lock; the shared stores already hold every row `docids` names. `vector_index` is the FAISS
    segments' entry (update_vectors); with store=milvus the generation's collection is built here."""
    name = f"gen-{_stamp()}"
    tmp = index_dir / (name + ".tmp")
    final = index_dir / name
    try:
        tmp.mkdir(parents=True)
        write_docids(tmp / DOCIDS, docids)
        req = dict(vector_request or DEFAULT_VECTOR_REQUEST)
        artifacts = {DOCIDS: _artifact(tmp / DOCIDS)}
        if req["store"] == "milvus":
            vector_index, art = _milvus(index_dir / manifest["store"]["dir"], tmp, name, manifest, req, docids)
            artifacts[art] = _artifact(tmp / art)
        manifest = dict(manifest, vector_index=vector_index, vector_request=req, counts={"chunks": len(docids)},
                        artifacts=artifacts)
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


def _milvus(store_dir: Path, tmp: Path, name: str, manifest: dict, req: dict, docids: np.ndarray) -> tuple[dict, str]:
    """A Milvus collection holds one generation (rows in its order, with both keyword legs): built
    whole from the stored vectors and texts, nothing re-embedded."""
    dim = manifest["embedder"]["dim"]
    opts = {k: v for k, v in req.items() if k not in ("index", "store") and v}
    texts = [c.embed_text() for c in ChunkStore(store_dir / STORE_DB, docids)]
    vindex = build_vector_index(req["index"], dim, read_vectors(store_dir / STORE_DB, docids, dim), store="milvus",
                                gen_dir=tmp, generation=name, texts=texts, **opts)
    art = getattr(vindex, "artifact", VECTORS)
    vindex.save(tmp / art)
    return vindex.params(), art


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
