"""A generation's chunk table (SQLite, no pickle): the chunks in row order, their vectors and their
keyword-store document ids. Written once per generation by rag.generations, read by rag.index."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .chunking import Chunk
from .errors import IndexCorrupt


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
