"""Writes a crash cannot leave half done: fsync, then rename or replace, then fsync the directory.

A rename is only durable once its directory is fsynced, and a file's bytes only once the file is:
without both, a power cut after `os.replace` can leave the new name pointing at an empty file.
The calls go through `os.<name>` at call time (not `from os import ...`), so tools that wrap
os.fsync / os.rename / os.replace (eval/killloop.py, the fault tests) see every step.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_durably(src: Path, dst: Path) -> None:
    """Move a complete file or directory to a new name: its contents first, then the new entry."""
    fsync_path(src)
    os.rename(src, dst)
    fsync_path(Path(dst).parent)


def commit_file(tmp: Path, path: Path) -> None:
    """Put a fully written temporary file in `path`'s place: its bytes first, then the new entry."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(Path(path).parent)


def replace_text(path: Path, text: str, encoding: str = "utf-8", tmp: Path | None = None) -> None:
    """Replace `path` with `text` so a reader, or a crash, sees the old or the new content, never a mix.

    The temporary file is `<name>.tmp` beside it unless `tmp` is given; on an error it is removed, and a
    kill leaves it for the owner's cleanup (rag.generations.cleanup_stale removes `CURRENT.tmp`)."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding=encoding)
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
