"""Chunking: Q&A-aware units, then langchain's recursive splitter with Chinese separators.

Interview notes are lists of questions; a numbered question line (`1.`, `12、`, `**12。**`, `(3)`,
`# heading`) starts a unit, and every chunk of a unit remembers its question as `heading`, which
is prefixed to the text that gets embedded and keyword-indexed (the answer alone rarely repeats
the question's words).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Iterator

from .loaders import Document

CHINESE_SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", "!", "?", ";", ". ", "，", ",", " ", ""]

# A line that starts a question/section. Groups: the marker kind decides nesting.
_QUESTION = re.compile(
    r"^\s*(?:"
    r"(?P<md>#{1,6})\s+"  # markdown heading
    r"|\*\*\s*(?P<bold>\d{1,3})\s*[。.、]?\s*\*\*\s*[。.、]?\s*"  # **12。** / **19** 。
    r"|\*\*\s*(?P<boldline>\d{1,3})\s*[。.、]\s*"  # **3。whole question in bold**
    r"|\[[^\]\n]{1,24}\]\s*(?P<tagnum>\d{1,3})\s*[.、。](?!\d)\s*"  # [ResNet] 9. (label first)
    r"|(?P<num>\d{1,3})\s*[。.、](?!\d)\s*"  # 1. / 1、 / 12。
    r"|[（(]\s*(?P<paren>\d{1,2})\s*[)）]\s*"  # (3) / （3）
    r")(?P<title>\S.*)$"
)
_MARKUP = re.compile(r"\*\*|__|`")
# langchain's splitter falls back to one split per character on text without separators, and works
# on a whole unit at once: a 20 MB line took minutes and GBs. Such runs are cut into fixed windows
# here, and long units are fed to the splitter a window at a time. Real notes never reach either
# limit (longest corpus unit ~1.3k chars, longest run without a separator ~100), so ids are unchanged.
_SEPARATOR_CHARS = r"\s。！？；!?;，,"
WINDOW_CHUNKS = 50  # splitter input at most this many chunk sizes


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    heading: str
    text: str
    start: int  # character span in the decoded source file
    end: int
    line: int
    file_sha256: str

    def embed_text(self) -> str:
        """What the retrievers see: the question heading gives the answer its context."""
        if self.heading and not self.text.lstrip("#*( 0123456789.、。)）").startswith(self.heading[:8]):
            return f"{self.heading}\n{self.text}"
        return self.text

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChunkerSettings:
    chunk_size: int = 400
    chunk_overlap: int = 40
    version: int = 2  # bump when the unit rules change: the manifest then forces a re-chunk

    def to_dict(self) -> dict:
        return asdict(self)


def _clean_title(title: str) -> str:
    return _MARKUP.sub("", title).strip(" *。.:：")


def split_units(text: str) -> list[tuple[str, int, int]]:
    """(heading, start, end) units of `text`. Text before the first question is its own unit."""
    starts: list[tuple[int, str]] = []
    section = ""
    offset = 0
    for line in text.splitlines(keepends=True):
        m = _QUESTION.match(line.rstrip("\n"))
        if m:
            title = _clean_title(m.group("title"))
            if m.group("paren") and section:
                title = f"{section} · {title}"
            elif m.group("num") and len(title) <= 12 and not title.endswith(("?", "？")):
                section = title  # "1、神经网络基础问题": a section over (1)(2)... items
            if title:
                starts.append((offset, title))
        offset += len(line)
    if not starts or starts[0][0] > 0:
        starts.insert(0, (0, ""))
    units = []
    for i, (start, heading) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        if text[start:end].strip():
            units.append((heading, start, end))
    return units


def _splitter(settings: ChunkerSettings):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        separators=CHINESE_SEPARATORS,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        keep_separator="end",
        add_start_index=True,
        strip_whitespace=True,
    )


def _windows(text: str, start: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, end) in pieces of at most `size`, cut after a line or sentence end where there is one."""
    while end - start > size:
        cut = -1
        for sep in ("\n\n", "\n", "。", "！", "？", ". ", "；"):
            i = text.rfind(sep, start + size // 2, start + size)
            if i >= 0:
                cut = i + len(sep)
                break
        cut = cut if cut > start else start + size
        yield start, cut
        start = cut
    if end > start:
        yield start, end


def _unit_pieces(unit: str, settings: ChunkerSettings, splitter) -> Iterator[tuple[int, str]]:
    """(offset in unit, chunk text) for one unit, in order."""
    size = settings.chunk_size
    step = max(1, size - settings.chunk_overlap)
    long_run = re.compile(f"[^{_SEPARATOR_CHARS}]{{{size + 1},}}")
    pos = 0
    for m in [*long_run.finditer(unit), None]:
        stop = m.start() if m else len(unit)
        for ws, we in _windows(unit, pos, stop, size * WINDOW_CHUNKS):
            window = unit[ws:we]
            for piece in splitter.create_documents([window]):
                rel = piece.metadata.get("start_index", -1)
                if rel < 0:
                    rel = window.find(piece.page_content)
                yield ws + max(rel, 0), piece.page_content
        if m:
            for s in range(m.start(), m.end(), step):
                yield s, unit[s:min(s + size, m.end())]
                if s + size >= m.end():
                    break
            pos = m.end()


def chunk_id(source: str, text: str, occurrence: int) -> str:
    h = hashlib.sha256(f"{source}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return h[:16]


def chunk_document(doc: Document, settings: ChunkerSettings = ChunkerSettings()) -> list[Chunk]:
    splitter = _splitter(settings)
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for heading, ustart, uend in split_units(doc.text):
        unit = doc.text[ustart:uend]
        for rel, body in _unit_pieces(unit, settings, splitter):
            if not body.strip() or len(body.strip()) < 2:
                continue
            start_clean = ustart + rel
            start = doc.to_source_offset(start_clean)
            end = doc.to_source_offset(start_clean + len(body) - 1) + 1
            n = seen.get(body, 0)
            seen[body] = n + 1
            chunks.append(Chunk(
                id=chunk_id(doc.source, body, n), source=doc.source, heading=heading, text=body,
                start=start, end=end, line=doc.line_of(start) if doc.raw_text else 0,
                file_sha256=doc.sha256,
            ))
    return chunks
