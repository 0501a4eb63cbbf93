"""rag.corpus: path policy, scan, and document status as data (no UI, no server)."""

from __future__ import annotations

import pytest

from rag.corpus import DocStatus, check_allowed, corpus_sources, document_status, scan_sources, unsupported_files
from rag.errors import CorpusError


def test_paths_outside_every_allowed_root_are_refused(tmp_path, corpus):
    check_allowed([corpus / "notes.md", corpus], [corpus])
    for bad in [tmp_path, corpus / ".." / "x.md", tmp_path / "elsewhere" / "a.md"]:
        with pytest.raises(CorpusError, match="outside the allowed root"):
            check_allowed([bad], [corpus])
    (corpus / "link.md").symlink_to(tmp_path / "target.md")
    with pytest.raises(CorpusError):  # a symlink is judged by where it points
        check_allowed([corpus / "link.md"], [corpus])


def test_scan_lists_supported_files_and_reports_symlinks(tmp_path, corpus):
    (corpus / "sub").mkdir()
    (corpus / "sub" / "deep.md").write_text("# 深\n内容。\n", encoding="utf-8")
    (corpus / ".hidden.md").write_text("x", encoding="utf-8")
    (corpus / "tool.exe").write_bytes(b"MZ")
    (tmp_path / "out.md").write_text("外部", encoding="utf-8")
    (corpus / "link.md").symlink_to(tmp_path / "out.md")
    skipped = []
    assert [s.source for s in scan_sources([corpus], skipped)] == ["grad.txt", "notes.md", "sub/deep.md"]
    assert [(p.name, "symbolic link" in why) for p, why in skipped] == [("link.md", True)]
    assert [p.name for p in unsupported_files([corpus])] == ["tool.exe"]
    assert set(corpus_sources(corpus)) == {"grad.txt", "notes.md", "sub/deep.md"}
    assert corpus_sources(tmp_path / "missing") == {}
    with pytest.raises(CorpusError, match="not found"):
        scan_sources([tmp_path / "missing"])


def test_document_status_is_data_against_the_live_index(assistant, settings):
    corpus, index = settings.corpus_dir, settings.index_dir
    assert {d.source: d.status for d in document_status(corpus, index)} == {
        "grad.txt": DocStatus.NOT_INDEXED, "notes.md": DocStatus.NOT_INDEXED}
    assistant.build()
    docs = {d.source: d for d in document_status(corpus, index)}
    assert docs["notes.md"].status is DocStatus.INDEXED and docs["notes.md"].chunks >= 1
    assert docs["notes.md"].indexed_at and docs["notes.md"].size == (corpus / "notes.md").stat().st_size
    (corpus / "notes.md").write_text("1. 新问题\n新答案。\n", encoding="utf-8")
    (corpus / "grad.txt").unlink()
    (corpus / "new.md").write_text("1. 另一个问题\n另一个答案。\n", encoding="utf-8")
    docs = {d.source: d for d in document_status(corpus, index)}
    assert docs["notes.md"].status is DocStatus.MODIFIED
    assert docs["grad.txt"].status is DocStatus.DELETED and docs["grad.txt"].chunks >= 1
    assert docs["new.md"].status is DocStatus.NOT_INDEXED and docs["new.md"].chunks is None
    (corpus / "empty.md").write_text("   \n", encoding="utf-8")
    assistant.build()
    docs = {d.source: d for d in document_status(corpus, index)}
    assert "grad.txt" not in docs and docs["notes.md"].status is DocStatus.INDEXED
    assert docs["empty.md"].status is DocStatus.SKIPPED and docs["empty.md"].reason
