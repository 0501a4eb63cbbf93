"""Building and loading the index: source files in, chunks -> embeddings -> stores out.

A build reads the files that changed since the live generation, chunks them, embeds only chunks it
has no vector for, appends them to the shared stores (chunks, keyword documents, a vector segment)
and writes the next generation, which lists the docids it shows; a load opens the live generation
and checks it against its manifest. How generations sit on disk, stay crash-safe and are cleaned up
is rag.generations; the chunk table is rag.chunk_store, the vector segments rag.vector_segments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .chunk_store import STORE_DB, ChunkStore, docids_of_sources, read_docids, vectors_by_id, write_rows
from .chunking import Chunk, ChunkerSettings, chunk_document
from .doc2query import Doc2QueryLeg
from .errors import CorpusError, EmbedderMismatch, IndexCorrupt, IndexMissing, LoaderError, RagError
from .generations import (DEFAULT_VECTOR_REQUEST, DOCIDS, FORMAT_VERSION, VECTORS, cleanup_stale, current_generation,
                          file_sha256, keywords_usable, new_store, read_manifest, update_keywords, update_vectors,
                          verify_artifacts, write_error, write_generation, write_lock)
from .keyword_index import KeywordIndex, MilvusKeywords
from .keyword_index import fingerprint as keyword_fingerprint
from .loaders import load_file
from .vector_segments import SegmentedVectors
from .vectors import VectorIndex, load_vector_index


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
    chunks: Sequence[Chunk]  # a ChunkStore: rows are read from the shared SQLite store when asked for
    vectors: VectorIndex
    bm25: KeywordIndex
    doc2query: Doc2QueryLeg | None = None  # the LLM's keywords/questions per chunk, as far as generated

    @property
    def embedder_id(self) -> str:
        return self.manifest["embedder"]["id"]


# ---------------------------------------------------------------- corpus scan

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
    docids = read_docids(gen / DOCIDS)
    store = Path(index_dir) / manifest["store"]["dir"]
    chunks = ChunkStore(store / STORE_DB, docids)
    try:
        vp = manifest["vector_index"]
        vectors = (SegmentedVectors.load(store, vp, docids, **(vector_search or {})) if "segments" in vp
                   else load_vector_index(vp, gen / vp.get("artifact", VECTORS), **(vector_search or {})))
        kw = manifest["keyword"]
        bm25 = (MilvusKeywords(vectors) if kw.get("store") == "milvus"
                else KeywordIndex(Path(index_dir) / kw["dir"], docids))
    except RagError:
        raise
    except Exception as e:  # faiss raises RuntimeError on garbage; checksums make this rare
        raise IndexCorrupt(f"{gen}: cannot read index files ({e}); run `rag index --rebuild`") from None
    if not (len(chunks) == vectors.ntotal == len(bm25) == manifest["counts"]["chunks"]):
        raise IndexCorrupt(f"{gen}: chunk store, vectors and BM25 disagree on the chunk count; run `rag index --rebuild`")
    if bm25.num_documents() < len(bm25):
        raise IndexCorrupt(f"{bm25.path} has fewer documents than {gen.name} has chunks; run `rag index --rebuild`")
    return LoadedIndex(gen, manifest, chunks, vectors, bm25, Doc2QueryLeg(Path(index_dir), chunks))


# ---------------------------------------------------------------- building

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
        prev = _previous(index_dir, rebuild, embedder_id, chunker, warn)
        hashes, stats = _hash_sources(sources, report, prev.files)
        todo = _sort_sources(sources, hashes, prev, report)
        request = {k: v for k, v in (vector_request or DEFAULT_VECTOR_REQUEST).items() if v}
        stores_changed = _stores_changed(index_dir, prev, request, warn)
        if prev.gen is not None and not todo and not report.removed and not report.skipped and not stores_changed:
            return _finish(report, t0, prev.manifest["counts"]["chunks"])

        read = _read_sources(sources, todo, hashes, stats, prev, chunker, report, progress)
        new = [c for s in sorted(read.chunks) for c in read.chunks[s]]  # rows of re-read files, appended
        kept, gone = _plan(index_dir, prev, read)
        report.timings["read"] = time.monotonic() - t0
        if not len(kept) and not new:
            raise CorpusError("nothing to index: no readable documents"
                              + (f" ({len(report.skipped)} skipped)" if report.skipped else ""))
        if prev.gen is not None and not new and not len(gone) and not stores_changed:
            return _finish(report, t0, len(kept))
        # a chunk id names its text: embeddings of re-chunked or re-read text come from the store
        known = vectors_by_id(index_dir / prev.store / STORE_DB, [c.id for c in new]) if prev.gen is not None else {}
        missing = [i for i, c in enumerate(new) if c.id not in known]
        vectors, embedder = _embed(new, known, missing, prev, embedder_id, load_embedder, progress)
        report.embedded = len(missing)
        report.timings["embed"] = time.monotonic() - t0 - report.timings["read"]
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "embedder": embedder,
            "chunker": chunker.to_dict(),
            "files": read.files,
            "skipped": read.skipped,
        }
        report.generation = _write(index_dir, prev, kept, gone, new, vectors, manifest, request, report,
                                   progress).name
        cleanup_stale(index_dir, previous=prev.gen.name if prev.gen is not None else None)
        return _finish(report, t0, len(kept) + len(new))


@dataclass
class _Previous:
    """The live generation a build starts from: none on a first build, on --rebuild, or when it is damaged."""
    gen: Path | None = None
    manifest: dict | None = None
    docids: np.ndarray | None = None  # its rows' docids
    indexed: tuple[str, ...] = ()  # every file it shows (its manifest's files, even when re-chunking all)

    @property
    def files(self) -> dict[str, dict]:
        """The files whose chunks can be kept as they are."""
        return self.manifest["files"] if self.manifest else {}

    @property
    def store(self) -> str:
        return self.manifest["store"]["dir"]


@dataclass
class _Read:
    """What the next generation holds per file, after reading the changed ones."""
    files: dict[str, dict] = field(default_factory=dict)  # source -> manifest entry
    kept: set[str] = field(default_factory=set)  # files whose rows the live generation has stay
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)  # source -> its new chunks
    skipped: list[dict] = field(default_factory=list)  # manifest entries {"source", "reason"}
    dropped: bool = False  # an indexed file became a copy of another one and leaves the index


def _finish(report: BuildReport, t0: float, chunks: int) -> BuildReport:
    report.chunks = chunks
    report.seconds = time.monotonic() - t0
    return report


def _previous(index_dir: Path, rebuild: bool, embedder_id: str, chunker: ChunkerSettings,
              warn: Callable[[str], None]) -> _Previous:
    """The live generation, fully verified; a damaged one is rebuilt from scratch, and one chunked with
    other settings keeps its vectors but has every file re-chunked."""
    if rebuild:
        return _Previous()
    try:
        gen = current_generation(index_dir)
        if gen is None:
            return _Previous()
        manifest = read_manifest(gen)
        verify_artifacts(gen, manifest, full=True)
        docids = read_docids(gen / DOCIDS)
    except IndexCorrupt as e:
        warn(f"{e} — rebuilding from scratch")
        return _Previous()
    check_embedder(manifest, embedder_id)
    indexed = tuple(manifest["files"])
    if manifest.get("chunker") != chunker.to_dict():
        warn("chunker settings changed — re-chunking every file")
        manifest = dict(manifest, files={})
    return _Previous(gen, manifest, docids, indexed)


STAT_TRUST_NS = 2 * 10**9  # a file modified this recently when hashed gets no stat record (see below)


def _hash_sources(sources: list[SourceFile], report: BuildReport,
                  indexed: dict[str, dict]) -> tuple[dict[str, str], dict[str, int | None]]:
    """sha256 of every readable source (unreadable ones are skipped in the report), and the mtime to
    record for it. A file whose size and mtime are those recorded when it was indexed keeps its
    recorded hash unread: hashing every file took 5-15 s of a one-file add at 1M chunks (10,000
    files, 0.4 GB). As in git, a file modified within STAT_TRUST_NS of being hashed gets no record
    (a same-size rewrite in the same timestamp tick would look unchanged), so it is hashed again
    next time; a rewrite that restores the old size and mtime is not seen (`rag index --rebuild`)."""
    hashes: dict[str, str] = {}
    mtimes: dict[str, int | None] = {}
    for sf in sources:
        try:
            st = sf.path.stat()
            old = indexed.get(sf.source) or {}
            if old.get("mtime_ns") == st.st_mtime_ns and old.get("bytes") == st.st_size:
                hashes[sf.source] = old["sha256"]
            else:
                hashes[sf.source] = file_sha256(sf.path)
            mtimes[sf.source] = st.st_mtime_ns if time.time_ns() - st.st_mtime_ns > STAT_TRUST_NS else None
        except OSError as e:
            report.skipped.append((sf.source, f"cannot read: {e.strerror or e}"))
    return hashes, mtimes


def _sort_sources(sources: list[SourceFile], hashes: dict[str, str], prev: _Previous,
                  report: BuildReport) -> list[SourceFile]:
    """Fill the report's removed and unchanged files; return the readable files to (re)read."""
    old_files = prev.files
    current = {s.source for s in sources if s.source in hashes}
    report.removed = sorted(set(old_files) - {s.source for s in sources})
    report.unchanged = sorted(s for s in current if s in old_files and old_files[s]["sha256"] == hashes[s])
    return [s for s in sources if s.source in hashes and s.source not in report.unchanged]


def _stores_changed(index_dir: Path, prev: _Previous, request: dict, warn: Callable[[str], None]) -> bool:
    """Whether the stores must be rewritten even with no file changed: another vector index was
    asked for, or the keyword store is missing or was built by other analyzers."""
    if prev.manifest is None:
        return False
    changed = prev.manifest.get("vector_request", DEFAULT_VECTOR_REQUEST) != request
    if not keywords_usable(index_dir, prev.manifest):
        warn("keyword index missing or built by other analyzers — rebuilding it")
        changed = True  # not a no-op: write a generation with a new keyword store
    return changed


def _read_sources(sources: list[SourceFile], todo: list[SourceFile], hashes: dict[str, str], stats: dict[str, int | None],
                  prev: _Previous, chunker: ChunkerSettings, report: BuildReport, progress: Callable | None) -> _Read:
    """Load and chunk the files in `todo`; unchanged files, and indexed files that now fail to load,
    keep what the live generation has for them."""
    old_files = prev.files
    read = _Read(files={s: dict(old_files[s], mtime_ns=stats.get(s)) for s in report.unchanged}, kept=set(report.unchanged))
    # The same bytes under a second name would fill the top-k with twin passages: the name indexed
    # first keeps them (already indexed, else sorted order); the copy is indexed if that one goes.
    first_of = {old_files[s]["sha256"]: s for s in reversed(report.unchanged)}
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
            _skip(read, report, sf.source, e.reason)
            if sf.source in old_files:  # keep what we had: nothing is lost on a bad update
                _keep(read, prev, sf.source)
            continue
        first = first_of.setdefault(doc.sha256, sf.source)
        if first != sf.source:
            _skip(read, report, sf.source, f"same content as {first}; not indexed twice")
            read.dropped = read.dropped or sf.source in old_files
            continue
        (report.changed if sf.source in old_files else report.added).append(sf.source)
        read.files[sf.source] = {"sha256": doc.sha256, "chunks": len(chunks), "encoding": doc.encoding,
                                 "bytes": sf.path.stat().st_size, "mtime_ns": stats[sf.source],
                                 "indexed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        read.chunks[sf.source] = chunks
    if bar:
        bar.close()
    for sf in sources:  # unreadable files that had been indexed keep their chunks as well
        if sf.source not in hashes and sf.source in old_files:
            _keep(read, prev, sf.source)
    return read


def _skip(read: _Read, report: BuildReport, source: str, reason: str) -> None:
    report.skipped.append((source, reason))
    read.skipped.append({"source": source, "reason": reason})


def _keep(read: _Read, prev: _Previous, source: str) -> None:
    read.files[source] = prev.files[source]
    read.kept.add(source)


def _plan(index_dir: Path, prev: _Previous, read: _Read) -> tuple[np.ndarray, np.ndarray]:
    """(docids of the live rows the next generation keeps, in their order; docids it drops): the rows
    of every file not kept as it is go, found by source in the store."""
    if prev.gen is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    live = prev.docids
    gone_files = [s for s in prev.indexed if s not in read.kept]
    if not gone_files:  # only additions: nothing to look up (an isin over a million docids is 0.1-0.5 s)
        return live, np.zeros(0, np.int64)
    of_files = docids_of_sources(index_dir / prev.store / STORE_DB, gone_files)
    gone = np.sort(of_files[np.isin(of_files, live)])  # the store also has older generations' rows
    return live[~np.isin(live, gone)], gone


def _embed(ordered: list[Chunk], known: dict[str, np.ndarray], missing: list[int], prev: _Previous,
           embedder_id: str, load_embedder: Callable[[], object], progress: Callable | None) -> tuple[np.ndarray, dict]:
    """Every chunk's vector: reused from the live generation by chunk id, embedded (in batches) for the
    `missing` rows. Returns the vectors and the manifest's embedder entry. The embedder is loaded only
    when something is missing."""
    embedder = load_embedder() if missing else None
    built = prev.manifest["embedder"] if embedder is None else None
    dim = embedder.dim if embedder is not None else built["dim"]
    fingerprint = getattr(embedder, "fingerprint", "") if embedder is not None else built.get("fingerprint", "")
    vectors = np.zeros((len(ordered), dim), dtype=np.float32)
    for i, c in enumerate(ordered):
        if c.id in known:
            vectors[i] = known[c.id]
    if missing:
        if prev.manifest is not None:
            check_embedder(prev.manifest, embedder_id, embedder.dim, getattr(embedder, "fingerprint", None))
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
    return vectors, {"id": embedder_id, "dim": dim, "fingerprint": fingerprint}


def _write(index_dir: Path, prev: _Previous, kept: np.ndarray, gone: np.ndarray, new: list[Chunk],
           vectors: np.ndarray, manifest: dict, request: dict, report: BuildReport, progress: Callable | None) -> Path:
    """Append to the shared stores (chunk rows, keyword documents, vector segment), each in its own
    atomic step and all before the generation that names them; then write the generation."""
    t1 = time.monotonic()
    reuse = prev.gen is not None
    store = prev.store if reuse else new_store(index_dir)
    db = index_dir / store / STORE_DB
    first = int(prev.manifest["store"]["next_docid"]) if reuse else 0
    new_ids = np.arange(first, first + len(new), dtype=np.int64)
    docids = np.concatenate([kept, new_ids])
    old_store = prev.manifest["store"] if reuse else {}
    with write_error(index_dir):
        # rows only the generation before the live one showed, and what a crashed build appended
        write_rows(db, new_ids, new, vectors, delete_from=first if reuse else None, delete=old_store.get("removed", ()))
    manifest["store"] = {"dir": store, "next_docid": first + len(new), "removed": gone.tolist()}
    t2 = time.monotonic()
    if request.get("store") == "milvus":  # keyword legs go into the generation's collection
        manifest["keyword"] = {"store": "milvus", "fingerprint": keyword_fingerprint()}
    else:
        manifest["keyword"] = update_keywords(
            index_dir, prev.manifest if reuse else None, (new_ids, [c.embed_text() for c in new]),
            lambda: (docids, [c.embed_text() for c in ChunkStore(db, docids)]), first + len(new), gone.tolist(), progress)
    t3 = time.monotonic()
    vector_index = None
    if request.get("store", "faiss") == "faiss":
        old_vp = prev.manifest.get("vector_index") if reuse and prev.manifest.get("vector_request") == request else None
        with write_error(index_dir):
            vector_index = update_vectors(index_dir / store, old_vp, request, manifest["embedder"]["dim"], docids,
                                          new_ids, vectors)
    t4 = time.monotonic()
    gen = write_generation(index_dir, manifest, docids, request, vector_index)
    report.timings.update(chunk_store=t2 - t1, keywords=t3 - t2, vectors=t4 - t3, write=time.monotonic() - t4)
    return gen
