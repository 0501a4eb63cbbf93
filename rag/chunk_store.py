"""The chunk store: every chunk's text, metadata and embedding in one SQLite table that the generations
share (index/store-<name>/chunks.sqlite), keyed by a docid that never changes once given.

A generation is the list of docids it shows, in row order (docids.npy in its directory); the keyword
store and the vector segments use the same docids. An incremental build therefore inserts only its
new chunks and deletes only rows no kept generation shows, in one SQLite transaction (atomic: a crash
leaves the last commit), instead of writing a new table of every chunk (two minutes at 100k chunks).
Rows are never updated: a changed file's chunks get new docids, so a reader holding an older
generation keeps reading exactly the rows it was built with (rag.generations says for how long).
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .chunking import Chunk
from .errors import IndexCorrupt

STORE_DB = "chunks.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS chunks (
    docid INTEGER PRIMARY KEY, id TEXT NOT NULL, source TEXT NOT NULL, heading TEXT NOT NULL,
    text TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, line INTEGER NOT NULL,
    file_sha256 TEXT NOT NULL, vector BLOB NOT NULL, crc INTEGER NOT NULL)"""
# by source: an update finds a changed file's rows; by id: a re-chunked file reuses embeddings
_INDEXES = ("CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source)",
            "CREATE INDEX IF NOT EXISTS chunks_id ON chunks(id)")
_COLS = ("id", "source", "heading", "text", "start", "end", "line", "file_sha256")
_SELECT = ", ".join(f'"{c}"' for c in _COLS) + ", vector, crc"
_BATCH = 500  # docids per `IN (...)`: well under SQLite's 32766 host parameters


def _crc(fields: Sequence, vector: bytes) -> int:
    """A row's checksum: the store changes with every build, so it has no file checksum; each row
    read is checked instead (a flipped byte in a chunk's text or vector is an IndexCorrupt)."""
    return zlib.crc32(vector, zlib.crc32("\x1f".join(map(str, fields)).encode()))


def _chunk(db: Path, r: tuple) -> Chunk:
    *fields, vector, crc = r
    if _crc(fields, vector) != crc:
        raise IndexCorrupt(f"{db}: chunk {fields[0]} fails its checksum (corrupted); run `rag index --rebuild`")
    return Chunk(*fields)


def _corrupt(db: Path, e: Exception) -> IndexCorrupt:
    return IndexCorrupt(f"{db}: {e}; run `rag index --rebuild`")


def connect(db: Path, write: bool = False) -> sqlite3.Connection:
    """Readers open read-write when they can (never writing) so that SQLite rolls back the journal
    of a writer killed mid-commit; on a read-only index they fall back to read-only."""
    db = Path(db)
    try:
        if write:
            con = sqlite3.connect(db, timeout=60)
            con.executescript(_SCHEMA)
            return con
        if not db.is_file():
            raise sqlite3.OperationalError("chunk store is missing")
        try:
            return sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30, check_same_thread=False)
        except sqlite3.OperationalError:
            return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    except sqlite3.DatabaseError as e:
        raise _corrupt(db, e) from None


def _batches(values: Sequence[int]) -> Iterator[list[int]]:
    values = [int(v) for v in values]
    for i in range(0, len(values), _BATCH):
        yield values[i:i + _BATCH]


def write_rows(db: Path, docids: Sequence[int], chunks: Sequence[Chunk], vectors: np.ndarray,
               delete_from: int | None = None, delete: Iterable[int] = ()) -> None:
    """One transaction: drop rows with docid >= `delete_from` (a crashed build's) and the `delete`d
    docids, insert the new chunks. Creates the store (and its lookup indexes, after the bulk insert)."""
    con = connect(db, write=True)
    try:
        with con:
            if delete_from is not None:
                con.execute("DELETE FROM chunks WHERE docid >= ?", (int(delete_from),))
            for b in _batches(list(delete)):
                con.execute(f"DELETE FROM chunks WHERE docid IN ({','.join('?' * len(b))})", b)
            con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                (int(d), *f, v, _crc(f, v)) for d, f, v in (
                    (d, (c.id, c.source, c.heading, c.text, c.start, c.end, c.line, c.file_sha256),
                     np.ascontiguousarray(vectors[i], dtype=np.float32).tobytes())
                    for i, (d, c) in enumerate(zip(docids, chunks)))))
            for sql in _INDEXES:  # no-ops after the first build, which indexes after its bulk insert
                con.execute(sql)
    finally:
        con.close()


def docids_of_sources(db: Path, sources: Iterable[str]) -> np.ndarray:
    """Every docid the store holds for these files (all generations' rows: the caller intersects)."""
    con = connect(db)
    try:
        out = [d for s in sources for (d,) in con.execute("SELECT docid FROM chunks WHERE source = ?", (s,))]
    except sqlite3.DatabaseError as e:
        raise _corrupt(db, e) from None
    finally:
        con.close()
    return np.asarray(out, dtype=np.int64)


def vectors_by_id(db: Path, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Stored embeddings of these chunk ids (a chunk id names its text: any row with it will do)."""
    con = connect(db)
    out: dict[str, np.ndarray] = {}
    try:
        ids = list(dict.fromkeys(ids))
        for i in range(0, len(ids), _BATCH):
            b = ids[i:i + _BATCH]
            for cid, blob in con.execute(f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(b))})", b):
                out[cid] = np.frombuffer(blob, dtype=np.float32)
    except sqlite3.DatabaseError as e:
        raise _corrupt(db, e) from None
    finally:
        con.close()
    return out


def read_vectors(db: Path, docids: Sequence[int], dim: int) -> np.ndarray:
    """The embeddings of `docids`, in that order (a compaction's or a Milvus collection's input)."""
    docids = np.asarray(docids, dtype=np.int64)
    out = np.empty((len(docids), dim), dtype=np.float32)
    pos = {int(d): i for i, d in enumerate(docids)}
    con = connect(db)
    try:
        for d, blob in con.execute("SELECT docid, vector FROM chunks"):  # one scan beats 1M lookups
            i = pos.pop(d, None)
            if i is not None:
                out[i] = np.frombuffer(blob, dtype=np.float32)
    except sqlite3.DatabaseError as e:
        raise _corrupt(db, e) from None
    finally:
        con.close()
    if pos:
        raise IndexCorrupt(f"{db}: {len(pos)} chunks of the generation are missing; run `rag index --rebuild`")
    return out


def read_docids(path: Path) -> np.ndarray:
    """A generation's row -> docid array (docids.npy)."""
    try:
        docids = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise IndexCorrupt(f"{path} is missing; run `rag index --rebuild`") from None
    except (OSError, ValueError) as e:
        raise IndexCorrupt(f"{path} cannot be read ({e}); run `rag index --rebuild`") from None
    if docids.ndim != 1 or docids.dtype != np.int64:
        raise IndexCorrupt(f"{path} is not a docid list; run `rag index --rebuild`")
    return docids


def write_docids(path: Path, docids: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(docids, dtype=np.int64), allow_pickle=False)


class ChunkStore(Sequence):
    """One generation's chunks, read by row on demand: a million chunks as Python objects would take
    seconds to load and gigabytes to hold, and a query needs a few dozen."""

    def __init__(self, db: Path, docids: np.ndarray):
        self.db = Path(db)
        self.docids = np.asarray(docids, dtype=np.int64)
        self._con = connect(self.db)
        try:  # one b-tree descent: a store that lost its newest rows is refused at load
            last = self._con.execute("SELECT max(docid) FROM chunks").fetchone()[0]
            page = self._con.execute("PRAGMA page_size").fetchone()[0]
            pages = self._con.execute("PRAGMA page_count").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise _corrupt(self.db, e) from None
        size = self.db.stat().st_size
        if size % page or size < page * pages:
            raise IndexCorrupt(f"{self.db} is truncated ({size} bytes, {pages} pages of {page}); run `rag index --rebuild`")
        if len(self.docids) and (last is None or last < int(self.docids.max())):
            raise IndexCorrupt(f"{self.db} lacks chunks this generation shows; run `rag index --rebuild`")
        self._lock = threading.Lock()  # one connection, shared by the UI's worker threads

    def __len__(self) -> int:
        return len(self.docids)

    def _missing(self, what) -> IndexCorrupt:
        return IndexCorrupt(f"{self.db}: chunk {what} is missing (deleted by a build two generations "
                            "later, or damaged); reload the index, or run `rag index --rebuild`")

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.rows(range(*i.indices(len(self))))
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        try:
            with self._lock:
                row = self._con.execute(f"SELECT {_SELECT} FROM chunks WHERE docid = ?",
                                        (int(self.docids[i]),)).fetchone()
        except sqlite3.DatabaseError as e:
            raise _corrupt(self.db, e) from None
        if row is None:
            raise self._missing(f"row {i}")
        return _chunk(self.db, row)

    def rows(self, rows: Iterable[int]) -> list[Chunk]:
        rows = list(rows)
        found: dict[int, Chunk] = {}
        with self._lock:
            for b in _batches(self.docids[rows].tolist() if rows else []):
                q = f"SELECT docid, {_SELECT} FROM chunks WHERE docid IN ({','.join('?' * len(b))})"
                found.update((d, _chunk(self.db, r)) for d, *r in self._con.execute(q, b))
        try:
            return [found[int(self.docids[r])] for r in rows]
        except KeyError:
            raise self._missing("rows") from None

    def __iter__(self) -> Iterator[Chunk]:
        for start in range(0, len(self), _BATCH):
            yield from self.rows(range(start, min(start + _BATCH, len(self))))
