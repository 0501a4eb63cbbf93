"""Build test PDFs with pypdf (no binary fixtures): text, blank (scanned), encrypted, truncated, bombs."""

from __future__ import annotations

import io
import zlib

from pypdf import PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, StreamObject


def _fonts(w: PdfWriter) -> DictionaryObject:
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    return DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): w._add_object(font)})})


def _bytes(w: PdfWriter) -> bytes:
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def text_pdf(lines: list[str], password: str | None = None) -> bytes:
    """One page per line of (ASCII) text; encrypted with `password` (RC4, no extra packages) if given."""
    w = PdfWriter()
    res = _fonts(w)
    for line in lines:
        page = w.add_blank_page(400, 200)
        page[NameObject("/Resources")] = res
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 20 100 Td ({line}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = w._add_object(stream)
    if password is not None:
        w.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    return _bytes(w)


def blank_pdf(pages: int = 2) -> bytes:
    """Pages without a text layer, like a scan."""
    w = PdfWriter()
    for _ in range(pages):
        w.add_blank_page(400, 200)
    return _bytes(w)


def flate_bomb(pages: int, megabytes: int) -> bytes:
    """One content stream, FlateDecode twice (a few KB on disk), that inflates to `megabytes` MB of
    text operators, shared by every page: parsing it costs pages x megabytes of work and memory."""
    comp = zlib.compressobj(9)
    parts = [comp.compress(b"BT /F1 12 Tf 20 100 Td (")]
    block = b"A" * (1 << 20)
    parts += [comp.compress(block) for _ in range(megabytes)]
    parts += [comp.compress(b") Tj ET"), comp.flush()]
    w = PdfWriter()
    stream = StreamObject()
    stream._data = zlib.compress(b"".join(parts), 9)
    stream[NameObject("/Filter")] = ArrayObject([NameObject("/FlateDecode"), NameObject("/FlateDecode")])
    ref = w._add_object(stream)
    res = _fonts(w)
    for _ in range(pages):
        page = w.add_blank_page(200, 200)
        page[NameObject("/Resources")] = res
        page[NameObject("/Contents")] = ref
    return _bytes(w)


# Stand-ins for a parser that never returns or that crashes, run by the sandbox in its child process.
def hang(data: bytes, path: str) -> str:
    while True:
        pass


def crash(data: bytes, path: str) -> str:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)
    return ""
