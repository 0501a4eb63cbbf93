"""Typed errors. The library raises these; only the CLI and UI turn them into messages."""


class RagError(Exception):
    """Base class: every expected failure is one of these, with a one-line message."""

    exit_code = 1


class QueryError(RagError):
    """The question itself is unusable (empty, too long)."""

    exit_code = 2


class CorpusError(RagError):
    """The corpus location is missing or not allowed."""

    exit_code = 3


class LoaderError(RagError):
    """One file could not be read or parsed. Batch operations skip it with a warning."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IndexMissing(RagError):
    """No index has been built yet at this location."""

    exit_code = 4


class IndexCorrupt(RagError):
    """The index on disk fails its manifest or checksum checks."""

    exit_code = 5


class EmbedderMismatch(RagError):
    """The index was built by a different embedder than the one configured."""

    exit_code = 6


class IndexLocked(RagError):
    """Another process is writing the index."""

    exit_code = 7


class DiskFull(RagError):
    """The disk filled up while writing; the previous index is untouched."""

    exit_code = 8


class ModelNotInstalled(RagError):
    """Model weights (or their packages) are not installed locally."""

    exit_code = 9


class ChecksumMismatch(RagError):
    """Assembled model weights do not match the pinned sha256."""

    exit_code = 10


class GenerationError(RagError):
    """The language model failed while producing an answer."""

    exit_code = 11


class ServiceBusy(RagError):
    """The generation queue is full (or the wait for the slot ran out): try again after `retry_after` s."""

    exit_code = 12

    def __init__(self, message: str, retry_after: int = 1, full: bool = True):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        self.full = full  # True: the wait list is full (HTTP 429); False: waited too long (503)


class GenerationTimeout(GenerationError):
    """The answer stalled (no token for too long) or ran over its time budget; the slot was freed."""

    exit_code = 13


class FeedbackError(RagError):
    """Feedback that cannot be stored: unknown answer id, bad rating, over-long correction."""

    exit_code = 2

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


class SettingsError(RagError):
    """A setting (flag, RAG_* variable, or model spec) has a value it cannot take."""

    exit_code = 2
