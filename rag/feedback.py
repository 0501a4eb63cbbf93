"""Answer feedback: every served answer is recorded (question, what was searched, retrieved passage
ids, answer, model, index generation, time); a 👍/👎 and an optional correction can be attached to
it later, from the UI or `POST /v1/feedback`. `rag eval feedback` turns 👎 answers into draft items
of a local eval set (the eval/answers.jsonl shape) for a person to review and keep.

SQLite in WAL mode with synchronous=FULL: a rating acknowledged to the user survives a crash or a
power cut. One connection guarded by a lock (the API and UI threads share it).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import FeedbackError, RagError

log = logging.getLogger(__name__)

RATINGS = {"up": 1, "down": -1, "👍": 1, "👎": -1, 1: 1, -1: -1}
MAX_CORRECTION = 4000
KEEP_UNRATED = 50_000  # answers without feedback beyond this many (oldest first) are pruned

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  id TEXT PRIMARY KEY, created REAL NOT NULL, question TEXT NOT NULL, query TEXT NOT NULL,
  retrieved TEXT NOT NULL, cited TEXT NOT NULL, sources TEXT NOT NULL, answer TEXT NOT NULL,
  abstained INTEGER NOT NULL, model TEXT NOT NULL, generation TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
  answer_id TEXT PRIMARY KEY REFERENCES answers(id), rating INTEGER NOT NULL, correction TEXT,
  channel TEXT NOT NULL, updated REAL NOT NULL
);
"""


@contextmanager
def _as_feedback_error():
    try:
        yield
    except sqlite3.Error as e:
        raise RagError(f"could not store the rating: {e}") from None  # the server's fault: HTTP 500


class FeedbackStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._inserts = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_answer(self, answer_id: str, answer, model: str, backend=None) -> None:
        """Remember a served answer so that feedback on it can name what was retrieved and said."""
        generation = None
        try:
            from .generations import current_generation

            gen = current_generation(backend.settings.index_dir) if backend is not None else None
            generation = gen.name if gen else None
        except Exception:  # feedback bookkeeping must never fail an answer
            generation = None
        hits = answer.hits
        row = (answer_id, time.time(), answer.question, answer.query, json.dumps([h.chunk.id for h in hits]),
               json.dumps([n for n, _ in answer.sources]),
               json.dumps([{"n": i, "source": h.chunk.source, "line": h.chunk.line, "heading": h.chunk.heading,
                            "text": h.chunk.text[:400]} for i, h in enumerate(hits, 1)], ensure_ascii=False),
               answer.text, int(answer.abstained), model, generation)
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
                self._inserts += 1
                if self._inserts % 1000 == 0:
                    self._db.execute("DELETE FROM answers WHERE id NOT IN (SELECT answer_id FROM feedback) AND id IN"
                                     " (SELECT id FROM answers ORDER BY created DESC LIMIT -1 OFFSET ?)", (KEEP_UNRATED,))
        except sqlite3.Error as e:  # a full disk loses the chance to rate this answer, never the answer itself
            log.warning("could not record answer %s for feedback: %s", answer_id, e)

    def rate(self, answer_id, rating, correction=None, channel: str = "api") -> dict:
        if not isinstance(answer_id, str) or not answer_id:
            raise FeedbackError("`id` must be the id of a completion this server returned")
        if rating not in RATINGS or isinstance(rating, bool):
            raise FeedbackError("`rating` must be \"up\" or \"down\"")
        if correction is not None and not isinstance(correction, str):
            raise FeedbackError("`correction` must be a string")
        correction = (correction or "").strip() or None
        if correction and len(correction) > MAX_CORRECTION:
            raise FeedbackError(f"`correction` is over {MAX_CORRECTION} characters")
        with self._lock, _as_feedback_error():
            if self._db.execute("SELECT 1 FROM answers WHERE id = ?", (answer_id,)).fetchone() is None:
                raise FeedbackError(f"no answer with id {answer_id!r} (unknown, or too old)", not_found=True)
            # a later rating of the same answer replaces the earlier one; a correction is kept unless replaced
            self._db.execute(
                "INSERT INTO feedback VALUES (?,?,?,?,?) ON CONFLICT(answer_id) DO UPDATE SET rating=excluded.rating,"
                " correction=COALESCE(excluded.correction, feedback.correction), channel=excluded.channel,"
                " updated=excluded.updated", (answer_id, RATINGS[rating], correction, channel, time.time()))
        return {"id": answer_id, "rating": "up" if RATINGS[rating] > 0 else "down", "correction": correction}

    def rows(self, rating: int | None = None) -> list[dict]:
        sql = ("SELECT a.*, f.rating, f.correction, f.channel, f.updated FROM answers a JOIN feedback f "
               "ON f.answer_id = a.id" + (" WHERE f.rating = ?" if rating is not None else "") + " ORDER BY f.updated")
        with self._lock:
            cur = self._db.execute(sql, (rating,) if rating is not None else ())
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]


def default_path(settings) -> Path:
    """RAG_FEEDBACK_DB, else feedback.sqlite3 next to the index directory (not inside it: the index
    directory holds generations that are replaced wholesale)."""
    import os

    return Path(os.environ.get("RAG_FEEDBACK_DB") or Path(settings.index_dir).parent / "feedback.sqlite3")


def eval_items(store: FeedbackStore) -> list[dict]:
    """👎 answers as draft eval items (eval/answers.jsonl fields, plus a `review` block). A reviewer
    fills in the gold passage (`source`, `gold_heading`, `gold_contains`) and `in_corpus`, and keeps it."""
    items = []
    for r in store.rows(rating=-1):
        sources = json.loads(r["sources"])
        cited = set(json.loads(r["cited"]))
        items.append({
            "id": f"fb_{r['id'][-12:]}", "question": r["question"],
            "source": None, "gold_contains": None, "gold_heading": None, "reference_keywords": [],
            "in_corpus": None, "alt_golds": [],
            "review": {"status": "needs_review", "answer_id": r["id"], "answer": r["answer"],
                       "abstained": bool(r["abstained"]), "correction": r["correction"], "query": r["query"],
                       "retrieved_ids": json.loads(r["retrieved"]),
                       "retrieved": [{**s, "cited": s["n"] in cited} for s in sources],
                       "model": r["model"], "index_generation": r["generation"],
                       "answered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["created"])),
                       "rated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["updated"])),
                       "channel": r["channel"]}})
    return items


def export(store: FeedbackStore, out: Path) -> tuple[int, int]:
    """Write the 👎 items to `out` (JSONL), keeping items a reviewer already edited there (by id).
    Returns (new items, total items)."""
    out = Path(out)
    kept: dict[str, dict] = {}
    if out.exists():  # a reviewer's edits: a bad line is an error naming it, never silently dropped
        from .evaluation.data import load_jsonl

        for n, item in enumerate(load_jsonl(out), 1):
            kept[str(item.get("id") or f"{out.name}:{n}")] = item
    new = 0
    for item in eval_items(store):
        if item["id"] not in kept:
            kept[item["id"]] = item
            new += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    from .atomic import replace_text

    replace_text(out, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in kept.values()),
                 tmp=out.with_name(f".{out.name}.tmp"))
    return new, len(kept)
