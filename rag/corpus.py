"""The corpus directory: which files are documents (scan and path policy), adding one (upload), removing
one (delete), and each document's state against the live index (status). Every refusal is a typed
CorpusError with a message a person can act on; the CLI and the UI only print or render them.

Uploads are saved by basename only, after they parse: a file the index would skip never enters the
corpus, and nothing a browser sends can name a path outside it.
"""

from __future__ import annotations

import enum
import os
import shutil
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .atomic import commit_file
from .errors import CorpusError, LoaderError, RagError
from .generations import current_generation, file_sha256, read_manifest
from .index import SourceFile
from .loaders import SUPPORTED_SUFFIXES

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")


# ---------------------------------------------------------------- scan and path policy

def check_allowed(paths: Iterable[Path], roots: Iterable[Path]) -> None:
    """Refuse paths that resolve (after symlinks and `..`) outside every allowed root."""
    resolved = [Path(r).resolve() for r in roots]
    for p in paths:
        rp = Path(p).resolve()
        if not any(rp.is_relative_to(r) for r in resolved):
            raise CorpusError(f"{p} is outside the allowed root ({' or '.join(str(r) for r in resolved)}); "
                              "index files under it, or pass --allow-outside")


def scan_sources(paths: Iterable[Path], skipped: list[tuple[Path, str]] | None = None) -> list[SourceFile]:
    """Supported files under the given files/directories. Symlinks are not followed (they could
    point anywhere, or loop); each one found is appended to `skipped` with the reason."""
    out: dict[str, SourceFile] = {}
    skipped = [] if skipped is None else skipped
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise CorpusError(f"corpus path not found: {root}")
        if root.is_file():
            out.setdefault(root.name, SourceFile(root, root.name))
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            skipped.extend((Path(dirpath) / d, "symbolic link to a directory, not followed")
                           for d in sorted(dirnames) if not d.startswith(".") and (Path(dirpath) / d).is_symlink())
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (Path(dirpath) / d).is_symlink())
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if name.startswith(".") or p.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                if p.is_symlink():
                    skipped.append((p, "symbolic link, not followed"))
                    continue
                source = p.relative_to(root).as_posix()
                out.setdefault(source, SourceFile(p, source))
    return sorted(out.values(), key=lambda s: s.source)


def unsupported_files(paths: Iterable[Path]) -> list[Path]:
    found = []
    for root in paths:
        root = Path(root)
        if root.is_file():
            if root.suffix.lower() not in SUPPORTED_SUFFIXES:
                found.append(root)
            continue
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SUPPORTED_SUFFIXES:
                found.append(p)
    return found


def corpus_sources(corpus_dir: Path) -> dict[str, Path]:
    """{source name: path} of the documents in the corpus directory (empty when it does not exist)."""
    if not Path(corpus_dir).is_dir():
        return {}
    return {s.source: s.path for s in scan_sources([Path(corpus_dir)])}


def _inside(corpus_dir: Path, path: Path) -> bool:
    root = corpus_dir.resolve()
    return path.resolve().parent == root or root in path.resolve().parents


# ---------------------------------------------------------------- upload and delete

def safe_document_name(name: str) -> str:
    """The basename an upload is saved under; anything path-like or hidden is rejected, not repaired."""
    name = unicodedata.normalize("NFC", str(name or "")).strip()
    if not name:
        raise CorpusError("文件名为空")
    if any(ch in name for ch in "/\\\x00") or any(unicodedata.category(ch) == "Cc" for ch in name):
        raise CorpusError(f"文件名不能包含路径或控制字符：{name!r}")
    if name in (".", "..") or name.startswith("."):
        raise CorpusError(f"不接受隐藏文件或相对路径：{name!r}")
    if len(name.encode("utf-8")) > 200:
        raise CorpusError("文件名过长（上限 200 字节）")
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise CorpusError(f"不支持的文件类型 “{suffix or '无扩展名'}”：支持 txt、md、html、pdf")
    return name


def save_upload(corpus_dir: Path, uploaded: Path, name: str | None = None) -> tuple[str, bool]:
    """Copy an uploaded file into the corpus directory under its basename; (name, replaced an old file)."""
    from .loaders import load_file

    corpus_dir = Path(corpus_dir)
    uploaded = Path(uploaded)
    name = safe_document_name(name or uploaded.name)
    size = uploaded.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise CorpusError(f"{name}：文件过大（{size / 2**20:.1f} MB，上限 {MAX_UPLOAD_BYTES // 2**20} MB）")
    if size == 0:
        raise CorpusError(f"{name}：文件是空的")
    try:  # parse before saving: a file the index would skip never enters the corpus
        doc = load_file(uploaded, name)
    except LoaderError as e:
        raise CorpusError(f"{name}：无法读取（{e.reason}）") from None
    if not doc.text.strip():
        raise CorpusError(f"{name}：没有可索引的文字（扫描版 PDF？）")
    corpus_dir.mkdir(parents=True, exist_ok=True)
    dest = corpus_dir / name
    if dest.is_symlink() or not _inside(corpus_dir, dest) or (dest.exists() and not dest.is_file()):
        raise CorpusError(f"{name}：不能覆盖这个位置")
    replaced = dest.exists()
    tmp = corpus_dir / f".upload-{uuid.uuid4().hex}"  # hidden: the indexer never sees a half-copied file
    try:
        shutil.copyfile(uploaded, tmp)
        commit_file(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return name, replaced


def delete_document(corpus_dir: Path, source: str) -> None:
    """Remove one listed document from the corpus directory (only names the corpus scan lists)."""
    sources = corpus_sources(corpus_dir)
    if source not in sources:
        raise CorpusError(f"资料库中没有这个文档：{source!r}")
    if len(sources) == 1:
        raise CorpusError("这是资料库中最后一个文档；先上传新文档再删除它")
    path = sources[source]
    if not _inside(Path(corpus_dir), path):
        raise CorpusError(f"{source}：不在资料库目录内")
    path.unlink()


# ---------------------------------------------------------------- status against the live index

class DocStatus(enum.Enum):
    INDEXED = "indexed"
    MODIFIED = "modified"  # on disk with another sha256 than the index has
    NOT_INDEXED = "not-indexed"
    SKIPPED = "skipped"  # the last build could not use it (`reason` says why)
    DELETED = "deleted"  # in the index, gone from disk
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Document:
    source: str
    size: int  # bytes: on disk, or as indexed for a deleted one
    status: DocStatus
    chunks: int | None = None  # None: not in the index
    indexed_at: str = ""  # ISO time of the build that indexed it
    reason: str = ""  # why a build skipped it


def live_manifest(index_dir: Path) -> dict:
    """The manifest of the live generation; empty when there is none or it cannot be read."""
    try:
        gen = current_generation(index_dir)
        return read_manifest(gen) if gen else {}
    except RagError:
        return {}


def document_status(corpus_dir: Path, index_dir: Path) -> list[Document]:
    """One entry per document in the corpus directory or the live index, sorted by name."""
    manifest = live_manifest(index_dir)
    indexed = manifest.get("files", {})
    skipped = {s["source"]: s["reason"] for s in manifest.get("skipped", [])}
    on_disk = corpus_sources(corpus_dir)
    out = []
    for source in sorted(set(on_disk) | set(indexed)):
        meta, path = indexed.get(source, {}), on_disk.get(source)
        if path is None:
            status = DocStatus.DELETED
        elif source in skipped and not meta:
            status = DocStatus.SKIPPED
        elif not meta:
            status = DocStatus.NOT_INDEXED
        else:
            try:
                status = DocStatus.INDEXED if file_sha256(path) == meta.get("sha256") else DocStatus.MODIFIED
            except OSError:
                status = DocStatus.UNREADABLE
        size = path.stat().st_size if path is not None else meta.get("bytes", 0)
        out.append(Document(source, size, status, meta.get("chunks"), meta.get("indexed_at", ""),
                            skipped.get(source, "") if status is DocStatus.SKIPPED else ""))
    return out
