"""Loading: bytes on disk -> clean text with an offset map back to the decoded file.

Supported: .txt .md (encoding detected), .html/.htm (BeautifulSoup), .pdf (pypdf).
Page furniture found in the seeds (follow/ads/payment widgets, image placeholders) is removed
line by line; `Document.to_source_offset` maps positions in the clean text back to the file.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LoaderError

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PDF_TEXT_CHARS = 20_000_000  # more extracted text than any real notes PDF: a bomb, stop early

# Lines that are page furniture wherever they appear (widgets, image placeholders, share/pay UI).
_STRONG_BOILERPLATE = re.compile(
    r"^\s*(?:"
    r"[0-9a-f]{16,}\.(?:png|jpe?g|gif|webp)"  # bare image file names left by scrapers
    r"|!\[[^\]]*\]\([^)]*\)"  # markdown image
    r"|—+\s*END\s*—+"
    r"|点击上方.*|重磅干货.*|本文转自.*|原力计划|目录|\(0\)|link|•\s*\d*"
    r"|下载\d+[:：].*|交流群|相关推荐|面试题全集|本文参考[:：]?"
    r"|.*(?:公众号|扫码|红包|余额|充值|抵扣|实付|点赞|一键收藏|登录后可见|立即刷新|成为第一位评论|头像|"
    r"上一篇|下一篇|作者简介|专栏推荐|学习者福利|技术控福利|学习资料推荐|成就一亿技术人|私信|加群|"
    r"CSDN|觉得还不错|平均$|还没有投票|请填写).*"
    r")\s*$",
    re.IGNORECASE,
)
# Weak signals: only furniture when the line is short (real answers mention these words too).
_WEAK_BOILERPLATE = re.compile(r"关注|收藏|评论|转发|分享|广告|赞赏|阅读原文|https?://|VIP|^\d+️⃣")
_WEAK_MAX_LEN = 24
_INLINE_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")


@dataclass
class Document:
    """A loaded file. `text` is the cleaned text that gets chunked."""

    source: str  # path relative to the corpus root, forward slashes
    text: str
    sha256: str  # of the raw bytes: the incremental index keys on it
    encoding: str
    raw_text: str = ""  # decoded text before cleaning (for citations by line)
    removed_lines: int = 0
    # (clean_offset, raw_offset) at the start of every kept segment
    _map: list[tuple[int, int]] = field(default_factory=list, repr=False)
    _newlines: list[int] | None = field(default=None, repr=False)

    def to_source_offset(self, clean_offset: int) -> int:
        if not self._map:
            return clean_offset
        i = bisect.bisect_right(self._map, (clean_offset, float("inf"))) - 1
        c, r = self._map[max(i, 0)]
        return r + (clean_offset - c)

    def line_of(self, raw_offset: int) -> int:
        # Bisect over newline offsets: counting per chunk is quadratic on a big file.
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.raw_text)]
        return bisect.bisect_left(self._newlines, raw_offset) + 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cjk_ratio(text: str, sample: int = 200_000) -> float:
    non_ascii = [c for c in text[:sample] if ord(c) > 127]  # a sample: a list per char of 20 MB costs GBs
    if not non_ascii:
        return 1.0
    cjk = sum(1 for c in non_ascii if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef")
    return cjk / len(non_ascii)


def _common_hanzi_ratio(text: str, sample: int = 20_000) -> float:
    """Share of ideographs in GB2312 or Big5 (the common ones). Shift-JIS read as GB18030 decodes
    without error into rare characters (怺憌妛廗…); EUC-JP and Big5 bring kana along, which count against."""
    hanzi = kana = common = 0
    for c in text[:sample]:
        if "\u3040" <= c <= "\u30ff":
            kana += 1
        elif "\u4e00" <= c <= "\u9fff":
            hanzi += 1
            for enc in ("gb2312", "big5"):
                try:
                    c.encode(enc)
                    common += 1
                    break
                except UnicodeEncodeError:
                    pass
    return common / (hanzi + 4 * kana) if hanzi + kana else 1.0


def _mostly_utf8(data: bytes) -> bool:
    """Valid UTF-8 multi-byte characters far outnumber the broken bytes: a damaged UTF-8 file,
    which any legacy codepage would only turn into mojibake."""
    text = data[:1_000_000].decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for c in text if ord(c) > 127) - bad
    return good >= 10 * max(bad, 1)


def decode_text(data: bytes, path: str = "<bytes>") -> tuple[str, str]:
    """Return (text, encoding). UTF-8/16 (BOM), GB18030 with a sanity check, then a detector."""
    if data.startswith(b"\xef\xbb\xbf"):
        return _strict(data[3:], "utf-8", path), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _strict(data, "utf-16", path), "utf-16"
    if b"\x00" in data[:8192]:
        raise LoaderError(path, "binary content (NUL bytes); not a text file")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    if _mostly_utf8(data):
        raise LoaderError(path, f"invalid UTF-8 at byte {utf8_error.start} (the rest is UTF-8: repair or re-save the file)")
    try:
        text = data.decode("gb18030")
        # Latin-1/cp1252 and Japanese bytes can decode as GB18030 by accident; real Chinese text is
        # mostly CJK, and mostly common characters.
        if _cjk_ratio(text) >= 0.6 and _common_hanzi_ratio(text) >= 0.8:
            return text, "gb18030"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None and best.encoding and best.encoding not in {"utf_8"}:
        text = str(best)
        if not _looks_binary(text):
            return text, best.encoding
    if utf8_error.start > len(data) // 2:
        raise LoaderError(path, f"invalid UTF-8 at byte {utf8_error.start}")
    raise LoaderError(path, "unknown text encoding (not UTF-8, UTF-16, GB18030 or a detectable codepage)")


def _strict(data: bytes, encoding: str, path: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise LoaderError(path, f"invalid {encoding} at byte {e.start}") from None


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    controls = sum(1 for c in text[:8192] if unicodedata.category(c) == "Cc" and c not in "\n\r\t\f")
    return controls / min(len(text), 8192) > 0.02


def is_boilerplate(line: str) -> bool:
    s = line.strip()
    if not s:
        return False
    if _STRONG_BOILERPLATE.match(s):
        return True
    return len(s) <= _WEAK_MAX_LEN and bool(_WEAK_BOILERPLATE.search(s))


def clean_lines(raw: str) -> tuple[str, list[tuple[int, int]], int]:
    """Drop furniture lines and inline images; collapse blank runs. Returns (text, map, removed)."""
    out: list[str] = []
    mapping: list[tuple[int, int]] = []
    pos = 0
    clean_len = 0
    removed = 0
    blank_run = 0
    for line in raw.splitlines(keepends=True):
        start = pos
        pos += len(line)
        body = line.rstrip("\r\n")
        if is_boilerplate(body):
            removed += 1
            continue
        if _INLINE_IMAGE.search(body):
            body = _INLINE_IMAGE.sub("", body)
        if not body.strip():
            blank_run += 1
            if blank_run > 1 or not out:
                continue
            piece = "\n"
        else:
            blank_run = 0
            piece = body.rstrip() + "\n"
        mapping.append((clean_len, start))
        out.append(piece)
        clean_len += len(piece)
    return "".join(out), mapping, removed


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise LoaderError(path, f"cannot read: {e.strerror or e}") from None
    if size > MAX_FILE_BYTES:
        raise LoaderError(path, f"file too large ({size:,} bytes > {MAX_FILE_BYTES:,})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise LoaderError(path, f"cannot read: {e.strerror or e}") from None


def _html_to_text(data: bytes, path: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    text, encoding = decode_text(data, path)
    soup = BeautifulSoup(text, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "svg", "iframe", "head", "nav", "footer"]):
        tag.decompose()
    for tag in soup.find_all(attrs={"hidden": True}):
        tag.decompose()
    for tag in soup.find_all(style=re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)):
        tag.decompose()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.insert_before("\n" + "#" * level + " ")
            h.insert_after("\n")
    for br in soup.find_all(["br", "p", "div", "li", "tr"]):
        br.insert_after("\n")
    body = soup.get_text()
    return re.sub(r"\n[ \t]*(?=\n)", "\n", body), encoding


def _pdf_to_text(data: bytes, path: str) -> str:
    """Parse in this process: only ever called inside the sandbox child (see `pdf_to_text`)."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise LoaderError(path, "encrypted PDF (password required)")
            except LoaderError:
                raise
            except Exception:
                raise LoaderError(path, "encrypted PDF (password required)") from None
        pages, total = [], 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            total += len(pages[-1])
            if total > MAX_PDF_TEXT_CHARS:
                raise LoaderError(path, f"PDF text exceeds {MAX_PDF_TEXT_CHARS:,} characters (decompression bomb?)")
    except (LoaderError, MemoryError):
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise LoaderError(path, f"corrupt PDF ({type(e).__name__}: {e})") from None
    except Exception as e:  # pypdf raises many internal types on garbage input
        raise LoaderError(path, f"corrupt PDF ({type(e).__name__}: {e})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise LoaderError(path, "no extractable text (scanned PDF? OCR is not supported)")
    return text


def pdf_to_text(data: bytes, path: str) -> str:
    """PDF text from a child process with a memory cap and a timeout (rag.sandbox)."""
    from . import sandbox

    return sandbox.run_limited("rag.loaders:_pdf_to_text", data, path, sandbox.PDF_TIMEOUT, sandbox.PDF_MAX_MEMORY)


def load_file(path: Path, source: str | None = None) -> Document:
    """Load one file. Raises LoaderError with a reason a user can act on."""
    path = Path(path)
    source = source or path.name
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise LoaderError(path, f"unsupported type '{suffix or '(none)'}' (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})")
    data = _read_bytes(path)
    digest = sha256_bytes(data)
    if not data.strip():
        raise LoaderError(path, "empty file")
    if suffix in PDF_SUFFIXES:
        if not data.startswith(b"%PDF"):
            raise LoaderError(path, "not a PDF (missing %PDF header)")
        raw, encoding = pdf_to_text(data, str(path)), "pdf"
    elif suffix in HTML_SUFFIXES:
        raw, encoding = _html_to_text(data, str(path))
    else:
        raw, encoding = decode_text(data, str(path))
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if _looks_binary(raw):
        raise LoaderError(path, "binary content; not a text file")
    text, mapping, removed = clean_lines(raw)
    if not text.strip():
        raise LoaderError(path, "no text left after removing page furniture")
    return Document(source=source, text=text, sha256=digest, encoding=encoding, raw_text=raw,
                    removed_lines=removed, _map=mapping)
