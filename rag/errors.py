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
