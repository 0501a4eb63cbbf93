import pytest

from rag.errors import LoaderError
from rag.loaders import decode_text, is_boilerplate, load_file

PHRASE = "深度学习中的批归一化可以加快收敛速度。"


def test_utf8_bom_is_stripped(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbf" + PHRASE.encode())
    doc = load_file(p)
    assert doc.text.startswith("深度") and doc.encoding == "utf-8-sig"


@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_gbk_and_gb18030_decode(tmp_path, encoding):
    p = tmp_path / "a.txt"
    p.write_bytes((PHRASE * 3).encode(encoding))
    doc = load_file(p)
    assert PHRASE in doc.text and "\ufffd" not in doc.text


def test_short_gbk_file(tmp_path):
    text, enc = decode_text("你好".encode("gbk"))
    assert text == "你好" and enc == "gb18030"


def test_gb18030_only_character():
    s = "人名𠀀测试"  # CJK Ext-B needs GB18030's 4-byte form
    assert decode_text(s.encode("gb18030"))[0] == s


def test_utf16_with_bom(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(PHRASE.encode("utf-16"))
    assert PHRASE in load_file(p).text


def test_latin1_is_not_misread_as_chinese():
    text, enc = decode_text("café crème brûlée, déjà vu".encode("latin-1"))
    assert "café" in text and enc != "gb18030"


def test_binary_renamed_txt_is_rejected(tmp_path):
    p = tmp_path / "img.txt"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(LoaderError, match="binary"):
        load_file(p)


def test_empty_and_whitespace_files(tmp_path):
    for name, data in [("e.txt", b""), ("w.txt", b" \n\t\n")]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(LoaderError, match="empty"):
            load_file(p)


def test_unsupported_type(tmp_path):
    p = tmp_path / "x.docx"
    p.write_bytes(b"PK\x03\x04")
    with pytest.raises(LoaderError, match="unsupported type"):
        load_file(p)


def test_html_scripts_and_hidden_text_removed(tmp_path):
    p = tmp_path / "a.html"
    p.write_text("<html><head><title>t</title><script>alert('x')</script></head><body>"
                 "<h2>什么是感受野</h2><p>感受野是输出特征图上一个点对应输入图像的区域大小。</p>"
                 "<div style='display:none'>隐藏文字</div><svg onload='alert(1)'></svg></body></html>", encoding="utf-8")
    doc = load_file(p)
    assert "感受野是输出" in doc.text and "## 什么是感受野" in doc.text
    assert "alert" not in doc.text and "隐藏文字" not in doc.text


def test_corrupt_pdf_is_a_loader_error(tmp_path):
    p = tmp_path / "a.pdf"
    p.write_bytes(b"%PDF-1.4\n garbage without objects")
    with pytest.raises(LoaderError):
        load_file(p)


def test_real_pdf_text(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    w = pypdf.PdfWriter()
    page = w.add_blank_page(200, 200)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): w._add_object(font)})})
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 20 100 Td (Dropout is used only in training) Tj ET")
    page[NameObject("/Contents")] = w._add_object(stream)
    p = tmp_path / "a.pdf"
    with open(p, "wb") as f:
        w.write(f)
    assert "Dropout is used only in training" in load_file(p).text


def test_seed_boilerplate_lines():
    assert is_boilerplate("点击上方“小白学视觉”,选择加\"星标\"或“置顶”")
    assert is_boilerplate("5fc82326ada502a796a09e8997015c7a.png")
    assert is_boilerplate("![](img/fd9c67d0022940ba5e0a5559f387bf65.png)")
    assert is_boilerplate("红包个数最小为10个")
    assert not is_boilerplate("梯度消失是因为激活函数在饱和区导数很小，关注这一点很重要，反向传播时连乘导致梯度趋近于零。")


def test_clean_text_keeps_offsets_into_source(corpus):
    doc = load_file(corpus / "grad.txt")
    assert "点击上方" not in doc.text and ".png" not in doc.text and "红包" not in doc.text
    i = doc.text.index("梯度爆炸可以")
    j = doc.to_source_offset(i)
    assert doc.raw_text[j:j + 6] == "梯度爆炸可以"
