"""Typed errors. The library raises these; only the CLI and UI turn them into messages."""


class RagError(Exception):
    """Base class: every expected failure is one of these, with a one-line message. `exit_code` is what
    the CLI exits with, given as a class keyword: `class IndexMissing(RagError, exit_code=4)`."""

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kw):
        super().__init_subclass__(**kw)
        if exit_code is not None:
            cls.exit_code = exit_code


class QueryError(RagError, exit_code=2):
    """The question itself is unusable (empty, too long)."""


class CorpusError(RagError, exit_code=3):
    """The corpus location is missing or not allowed."""


class LoaderError(RagError):
    """One file could not be read or parsed. Batch operations skip it with a warning."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IndexMissing(RagError, exit_code=4):
    """No index has been built yet at this location."""


class IndexCorrupt(RagError, exit_code=5):
    """The index on disk fails its manifest or checksum checks."""


class EmbedderMismatch(RagError, exit_code=6):
    """The index was built by a different embedder than the one configured."""


class IndexLocked(RagError, exit_code=7):
    """Another process is writing the index."""


class DiskFull(RagError, exit_code=8):
    """The disk filled up while writing; the previous index is untouched."""


class ModelNotInstalled(RagError, exit_code=9):
    """Model weights (or their packages) are not installed locally."""


class ChecksumMismatch(RagError, exit_code=10):
    """Assembled model weights do not match the pinned sha256."""


class GenerationError(RagError, exit_code=11):
    """The language model failed while producing an answer."""


class ServiceBusy(RagError, exit_code=12):
    """The generation queue is full (or the wait for the slot ran out): try again after `retry_after` s."""

    def __init__(self, message: str, retry_after: int = 1, full: bool = True):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        self.full = full  # True: the wait list is full (HTTP 429); False: waited too long (503)


class GenerationTimeout(GenerationError, exit_code=13):
    """The answer stalled (no token for too long) or ran over its time budget; the slot was freed."""


class FeedbackError(RagError, exit_code=2):
    """Feedback that cannot be stored: unknown answer id, bad rating, over-long correction."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


class SettingsError(RagError, exit_code=2):
    """A setting (flag, RAG_* variable, or model spec) has a value it cannot take."""
