"""The on-disk index: generations, manifest, checksums, lock, incremental builds.

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
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .chunking import Chunk, ChunkerSettings, chunk_document
from .errors import CorpusError, DiskFull, EmbedderMismatch, IndexCorrupt, IndexLocked, IndexMissing, LoaderError, RagError
from .keyword_index import KeywordIndex, KeywordWriter, MilvusKeywords, read_meta
from .keyword_index import fingerprint as keyword_fingerprint
from .loaders import load_file, sha256_bytes
from .vectors import VectorIndex, build_vector_index, drop_vector_index, load_vector_index

FORMAT_VERSION = 3  # 3: keyword legs in a tantivy store (2 had bm25.json per generation)
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
CHUNKS_DB = "chunks.sqlite"
VECTORS = "vectors.faiss"
KEYWORD_PREFIX = "keyword-"
KEEP_GENERATIONS = 2  # the live one and its predecessor (readers may still hold it)
# What a generation's vectors were built as; manifests written before it existed were this.
DEFAULT_VECTOR_REQUEST = {"index": "auto", "store": "faiss"}


@dataclass
class SourceFile:
    path: Path
    source: str


@dataclass
class BuildReport:
    generation: str | None = None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # seconds per stage: read, embed, keywords, write

    @property
    def up_to_date(self) -> bool:
        return self.generation is None


@dataclass
class LoadedIndex:
    path: Path
    manifest: dict
    chunks: Sequence[Chunk]  # a ChunkStore: rows are read from SQLite when asked for
    vectors: VectorIndex
    bm25: KeywordIndex

    @property
    def embedder_id(self) -> str:
        return self.manifest["embedder"]["id"]


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


def check_embedder(manifest: dict, embedder_id: str, dim: int | None = None, fingerprint: str | None = None) -> None:
    built = manifest["embedder"]
    if (built["id"] != embedder_id or (dim is not None and built["dim"] != dim)
            or (fingerprint and built.get("fingerprint") and built["fingerprint"] != fingerprint)):
        raise EmbedderMismatch(
            f"index was built with embedder '{built['id']}' (dim {built['dim']}, build {built.get('fingerprint') or '-'}), "
            f"but '{embedder_id}' (dim {dim or '?'}, build {fingerprint or '-'}) is configured; "
            "run `rag index --rebuild` or configure the original embedder")


def load_index(index_dir: Path, embedder_id: str | None = None, vector_search: dict | None = None) -> LoadedIndex:
    """Load and verify the live generation. Raises IndexMissing / IndexCorrupt / EmbedderMismatch.

    `vector_search` overrides the saved search-time knobs (nprobe, ef_search, k_factor, milvus_uri)."""
    gen = current_generation(index_dir)
    if gen is None:
        raise IndexMissing(f"no index at {index_dir}; run `rag index`")
    manifest = read_manifest(gen)
    if embedder_id is not None:
        check_embedder(manifest, embedder_id)
    verify_artifacts(gen, manifest)
    chunks = ChunkStore(gen / CHUNKS_DB)
    try:
        vp = manifest["vector_index"]
        vectors = load_vector_index(vp, gen / vp.get("artifact", VECTORS), **(vector_search or {}))
        kw = manifest["keyword"]
        bm25 = (MilvusKeywords(vectors) if kw.get("store") == "milvus"
                else KeywordIndex(Path(index_dir) / kw["dir"], read_docids(gen / CHUNKS_DB)))
    except RagError:
        raise
    except Exception as e:  # faiss raises RuntimeError on garbage; checksums make this rare
        raise IndexCorrupt(f"{gen}: cannot read index files ({e}); run `rag index --rebuild`") from None
    if not (len(chunks) == vectors.ntotal == len(bm25) == manifest["counts"]["chunks"]):
        raise IndexCorrupt(f"{gen}: chunk store, vectors and BM25 disagree on the chunk count; run `rag index --rebuild`")
    if bm25.num_documents() < len(bm25):
        raise IndexCorrupt(f"{bm25.path} has fewer documents than {gen.name} has chunks; run `rag index --rebuild`")
    return LoadedIndex(gen, manifest, chunks, vectors, bm25)


# ---------------------------------------------------------------- chunk store (SQLite, no pickle)

_SCHEMA = """CREATE TABLE chunks (
    row INTEGER PRIMARY KEY, id TEXT NOT NULL, source TEXT NOT NULL, heading TEXT NOT NULL,
    text TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, line INTEGER NOT NULL,
    file_sha256 TEXT NOT NULL, vector BLOB NOT NULL);
CREATE TABLE docids (row INTEGER PRIMARY KEY, docid INTEGER NOT NULL)"""
# docids apart from the chunks: reading them at load must not page in every chunk's text and vector
_COLS = ("id", "source", "heading", "text", "start", "end", "line", "file_sha256")
_SELECT = ", ".join(f'"{c}"' for c in _COLS)


def read_chunks(db: Path) -> list[Chunk]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(f"SELECT {_SELECT} FROM chunks ORDER BY row").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise IndexCorrupt(f"{db}: {e}; run `rag index --rebuild`") from None
    return [Chunk(*r) for r in rows]


class ChunkStore(Sequence):
    """A generation's chunks, read by row on demand: a million chunks as Python objects would take
    seconds to load and gigabytes to hold, and a query needs a few dozen."""

    def __init__(self, db: Path):
        self.db = Path(db)
        try:
            self._con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
            # max(row) is one b-tree descent; count(*) would read every page (gigabytes at 1M chunks)
            last = self._con.execute("SELECT max(row) FROM chunks").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise IndexCorrupt(f"{db}: {e}; run `rag index --rebuild`") from None
        self._n = 0 if last is None else last + 1  # load_index compares it with the manifest
        self._lock = threading.Lock()  # one connection, shared by the UI's worker threads

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        with self._lock:
            row = self._con.execute(f"SELECT {_SELECT} FROM chunks WHERE row = ?", (i,)).fetchone()
        if row is None:
            raise IndexCorrupt(f"{self.db}: row {i} is missing; run `rag index --rebuild`")
        return Chunk(*row)

    def __iter__(self) -> Iterator[Chunk]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            for r in con.execute(f"SELECT {_SELECT} FROM chunks ORDER BY row"):
                yield Chunk(*r)
        finally:
            con.close()


def read_docids(db: Path) -> np.ndarray:
    """The keyword store's document id of every row."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return np.fromiter((d for (d,) in con.execute("SELECT docid FROM docids ORDER BY row")), dtype=np.int64)
    finally:
        con.close()


def read_docid_map(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT c.id, d.docid FROM chunks c JOIN docids d ON c.row = d.row"))
    finally:
        con.close()


def read_vectors(db: Path) -> dict[str, np.ndarray]:
    """Chunk id -> stored embedding, for reuse by an incremental build."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {cid: np.frombuffer(blob, dtype=np.float32) for cid, blob in con.execute("SELECT id, vector FROM chunks")}
    finally:
        con.close()


def write_chunks(db: Path, chunks: list[Chunk], vectors: np.ndarray, docids: Sequence[int]) -> None:
    con = sqlite3.connect(db)
    try:
        con.executescript(_SCHEMA)
        con.executemany(
            'INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            ((i, c.id, c.source, c.heading, c.text, c.start, c.end, c.line, c.file_sha256,
              np.ascontiguousarray(vectors[i], dtype=np.float32).tobytes()) for i, c in enumerate(chunks)))
        con.executemany("INSERT INTO docids VALUES (?, ?)", ((i, int(d)) for i, d in enumerate(docids)))
        con.commit()
    finally:
        con.close()


# ---------------------------------------------------------------- writing

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _keywords_usable(index_dir: Path, manifest: dict) -> bool:
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
    reuse = old_gen is not None and old_manifest is not None and _keywords_usable(index_dir, old_manifest)
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


def write_generation(index_dir: Path, chunks: list[Chunk], vectors: np.ndarray, manifest: dict,
                     vector_request: dict | None = None, docids: Sequence[int] | None = None) -> Path:
    """Write a complete generation, then switch CURRENT to it. Caller holds the lock; the keyword
    store already has the documents `docids` (row -> document) name (update_keywords)."""
    name = f"gen-{_stamp()}"
    tmp = index_dir / (name + ".tmp")
    final = index_dir / name
    try:
        tmp.mkdir(parents=True)
        dim = manifest["embedder"]["dim"]
        write_chunks(tmp / CHUNKS_DB, chunks, vectors, range(len(chunks)) if docids is None else docids)
        req = dict(vector_request or DEFAULT_VECTOR_REQUEST)
        opts = {k: v for k, v in req.items() if k not in ("index", "store") and v}
        texts = [c.embed_text() for c in chunks] if req["store"] == "milvus" else None
        vindex = build_vector_index(req["index"], dim, vectors, store=req["store"], gen_dir=tmp,
                                    generation=name, texts=texts, **opts)
        vart = getattr(vindex, "artifact", VECTORS)
        vindex.save(tmp / vart)
        manifest = dict(manifest)
        manifest["vector_index"] = vindex.params()
        manifest["vector_request"] = req
        manifest["counts"] = {"chunks": len(chunks)}
        manifest["artifacts"] = {}
        for art in (CHUNKS_DB, vart):
            _fsync_file(tmp / art)
            st = (tmp / art).stat()  # rename keeps mtime_ns: a load can tell an untouched file (verify_artifacts)
            manifest["artifacts"][art] = {"sha256": file_sha256(tmp / art), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
        _fsync_file(tmp / MANIFEST)
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(index_dir)
        cur_tmp = index_dir / (CURRENT + ".tmp")
        cur_tmp.write_text(name + "\n")
        _fsync_file(cur_tmp)
        os.replace(cur_tmp, index_dir / CURRENT)
        _fsync_dir(index_dir)
    except BaseException as e:
        # Nothing of a failed or interrupted build stays behind, unless it already went live.
        shutil.rmtree(tmp, ignore_errors=True)
        (index_dir / (CURRENT + ".tmp")).unlink(missing_ok=True)
        try:
            live = (index_dir / CURRENT).read_text().strip()
        except OSError:
            live = None
        if final.exists() and live != name:
            shutil.rmtree(final, ignore_errors=True)
        typed = _write_error(e, index_dir) if isinstance(e, (OSError, sqlite3.Error, RuntimeError)) else None
        if typed is not None:
            raise typed from None
        raise
    return final


def build_index(
    sources: list[SourceFile],
    index_dir: Path,
    embedder_id: str,
    load_embedder: Callable[[], object],
    chunker: ChunkerSettings = ChunkerSettings(),
    rebuild: bool = False,
    progress: Callable | None = None,
    warn: Callable[[str], None] = lambda m: None,
    lock_wait: float = 0.0,
    vector_request: dict | None = None,
) -> BuildReport:
    """Create or incrementally update the index from `sources`.

    Unchanged files (same sha256) keep their chunks and vectors; changed files are re-chunked and only
    chunks whose id is new get embedded; files no longer present are dropped. A file that fails to load
    is skipped with a warning; if it was indexed before, its previous chunks are kept.
    `vector_request` ({"index": auto|flat|hnsw|..., "store": faiss|milvus, "milvus_uri", "nprobe",
    "ef_search"}) picks the vector index; a different request than the live generation's rebuilds
    the vector index from the stored vectors (nothing is re-embedded).
    """
    t0 = time.monotonic()
    index_dir = Path(index_dir)
    report = BuildReport()
    with write_lock(index_dir, wait=lock_wait):
        cleanup_stale(index_dir)
        old_gen, old_manifest = None, None
        if not rebuild:
            try:
                old_gen = current_generation(index_dir)
                if old_gen is not None:
                    old_manifest = read_manifest(old_gen)
                    verify_artifacts(old_gen, old_manifest, full=True)
            except IndexCorrupt as e:
                warn(f"{e} — rebuilding from scratch")
                old_gen, old_manifest = None, None
        if old_manifest is not None:
            check_embedder(old_manifest, embedder_id)
            if old_manifest.get("chunker") != chunker.to_dict():
                warn("chunker settings changed — re-chunking every file")
                old_manifest = dict(old_manifest, files={})
        old_files: dict[str, dict] = old_manifest["files"] if old_manifest else {}
        hashes = {}
        for sf in sources:
            try:
                hashes[sf.source] = file_sha256(sf.path)
            except OSError as e:
                report.skipped.append((sf.source, f"cannot read: {e.strerror or e}"))
        current = {s.source for s in sources if s.source in hashes}
        report.removed = sorted(set(old_files) - {s.source for s in sources})
        report.unchanged = sorted(s for s in current if s in old_files and old_files[s]["sha256"] == hashes[s])
        todo = [s for s in sources if s.source in hashes and s.source not in report.unchanged]
        request = {k: v for k, v in (vector_request or DEFAULT_VECTOR_REQUEST).items() if v}
        vectors_changed = old_manifest is not None and old_manifest.get("vector_request", DEFAULT_VECTOR_REQUEST) != request
        if old_manifest is not None and not _keywords_usable(index_dir, old_manifest):
            warn("keyword index missing or built by other analyzers — rebuilding it")
            vectors_changed = True  # not a no-op: write a generation with a new keyword store
        if old_gen is not None and not todo and not report.removed and not report.skipped and not vectors_changed:
            report.chunks = old_manifest["counts"]["chunks"]
            report.seconds = time.monotonic() - t0
            return report

        old_chunks = read_chunks(old_gen / CHUNKS_DB) if old_gen is not None else []
        old_by_source: dict[str, list[Chunk]] = {}
        for c in old_chunks:
            old_by_source.setdefault(c.source, []).append(c)

        files_meta: dict[str, dict] = {s: old_files[s] for s in report.unchanged}
        new_chunks: dict[str, list[Chunk]] = {s: old_by_source.get(s, []) for s in report.unchanged}
        skipped_meta: list[dict] = []
        # The same bytes under a second name would fill the top-k with twin passages: the name indexed
        # first keeps them (already indexed, else sorted order); the copy is indexed if that one goes.
        first_of = {old_files[s]["sha256"]: s for s in reversed(report.unchanged)}
        dropped = False
        bar = progress(total=len(todo), desc="reading", unit="file") if progress and len(todo) > 1 else None
        for sf in todo:
            if bar:
                bar.update(1)
            try:
                doc = load_file(sf.path, sf.source)
                if doc.sha256 != hashes[sf.source]:
                    raise LoaderError(sf.path, "file changed while indexing; run `rag index` again")
                chunks = chunk_document(doc, chunker)
                if not chunks:
                    raise LoaderError(sf.path, "no text to index")
            except LoaderError as e:
                report.skipped.append((sf.source, e.reason))
                skipped_meta.append({"source": sf.source, "reason": e.reason})
                if sf.source in old_files:  # keep what we had: nothing is lost on a bad update
                    files_meta[sf.source] = old_files[sf.source]
                    new_chunks[sf.source] = old_by_source.get(sf.source, [])
                continue
            first = first_of.setdefault(doc.sha256, sf.source)
            if first != sf.source:
                reason = f"same content as {first}; not indexed twice"
                report.skipped.append((sf.source, reason))
                skipped_meta.append({"source": sf.source, "reason": reason})
                dropped = dropped or sf.source in old_files
                continue
            (report.changed if sf.source in old_files else report.added).append(sf.source)
            files_meta[sf.source] = {"sha256": doc.sha256, "chunks": len(chunks), "encoding": doc.encoding,
                                     "bytes": sf.path.stat().st_size, "indexed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            new_chunks[sf.source] = chunks
        if bar:
            bar.close()
        for sf in sources:  # unreadable files that had been indexed keep their chunks as well
            if sf.source not in hashes and sf.source in old_files:
                files_meta[sf.source] = old_files[sf.source]
                new_chunks[sf.source] = old_by_source.get(sf.source, [])

        ordered = [c for s in sorted(new_chunks) for c in new_chunks[s]]
        report.timings["read"] = time.monotonic() - t0
        if not ordered:
            raise CorpusError("nothing to index: no readable documents"
                              + (f" ({len(report.skipped)} skipped)" if report.skipped else ""))
        known = read_vectors(old_gen / CHUNKS_DB) if old_gen is not None else {}
        missing = [i for i, c in enumerate(ordered) if c.id not in known]
        if (old_gen is not None and not missing and not report.removed and not report.added and not report.changed and not vectors_changed
                and not dropped):
            report.chunks = len(ordered)
            report.seconds = time.monotonic() - t0
            return report
        embedder = load_embedder() if missing else None
        dim = embedder.dim if embedder is not None else old_manifest["embedder"]["dim"]
        fingerprint = (getattr(embedder, "fingerprint", "") if embedder is not None
                       else old_manifest["embedder"].get("fingerprint", ""))
        vectors = np.zeros((len(ordered), dim), dtype=np.float32)
        for i, c in enumerate(ordered):
            if c.id in known:
                vectors[i] = known[c.id]
        if missing:
            if old_manifest is not None:
                check_embedder(old_manifest, embedder_id, embedder.dim, getattr(embedder, "fingerprint", None))
            batch = 64
            bar = progress(total=len(missing), desc="embedding", unit="chunk") if progress else None
            try:
                for b in range(0, len(missing), batch):
                    rows = missing[b:b + batch]
                    vectors[rows] = embedder.embed_documents([ordered[i].embed_text() for i in rows])
                    if bar:
                        bar.update(len(rows))
            finally:
                if bar:
                    bar.close()
        report.embedded = len(missing)
        report.timings["embed"] = time.monotonic() - t0 - report.timings["read"]
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "embedder": {"id": embedder_id, "dim": dim, "fingerprint": fingerprint},
            "chunker": chunker.to_dict(),
            "files": files_meta,
            "skipped": skipped_meta,
        }
        t1 = time.monotonic()
        if request.get("store") == "milvus":  # keyword legs go into the generation's collection
            manifest["keyword"], docids = {"store": "milvus", "fingerprint": keyword_fingerprint()}, None
        else:
            manifest["keyword"], docids = update_keywords(index_dir, old_gen, old_manifest, ordered, progress)
        t2 = time.monotonic()
        gen = write_generation(index_dir, ordered, vectors, manifest, request, docids)
        report.timings.update(keywords=t2 - t1, write=time.monotonic() - t2)
        cleanup_stale(index_dir, previous=old_gen.name if old_gen is not None else None)
        report.generation = gen.name
        report.chunks = len(ordered)
        report.seconds = time.monotonic() - t0
        return report
