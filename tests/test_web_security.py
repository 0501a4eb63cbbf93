"""Web security regressions (reliability checklist 6.1 #29, 6.4), in the style of gradio's own tests:
the app launched exactly as `python app.py` launches it (fake models), probed over HTTP."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import pick_free_port, write_sample_corpus
from rag.fakes import FakeEmbedder, FakeGenerator

httpx = pytest.importorskip("httpx")
pytest.importorskip("gradio")

EVIL_ORIGINS = ["https://evil.example", "null", "http://127.0.0.1.evil.example", "http://localhost.evil.example"]



@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from rag.assistant import Assistant
    from rag.config import Settings
    from rag.ui import launch

    tmp = tmp_path_factory.mktemp("web")
    corpus = tmp / "corpus"
    write_sample_corpus(corpus)
    settings = Settings(corpus_dir=corpus, index_dir=tmp / "index", cache_dir=tmp / "cache",
                        embedder="fake", generator="fake")
    Assistant(settings, embedder=FakeEmbedder(), generator=FakeGenerator()).build()
    (tmp / "cache").mkdir()
    (tmp / "cache" / "model.gguf").write_bytes(b"GGUF weights")
    (tmp / "secret.txt").write_text("top secret", encoding="utf-8")  # next to the corpus, not in any served dir
    demo = launch(settings, port=pick_free_port(), embedder=FakeEmbedder(), generator=FakeGenerator(), block=False,
                  quiet=True)  # api=False: the default, as app.py
    yield demo, settings, tmp
    demo.close()


@pytest.fixture(scope="module")
def http(app):
    # no keep-alive: gradio answers a few malformed calls with a 500 that drops the connection
    with httpx.Client(base_url=app[0].local_url.rstrip("/"), timeout=30, follow_redirects=False,
                      limits=httpx.Limits(max_keepalive_connections=0)) as c:
        yield c


def _index_files(settings) -> list[Path]:
    from rag.generations import current_generation

    gen = current_generation(settings.index_dir)
    return [settings.index_dir / "CURRENT", *sorted(gen.iterdir())]


# ---------------------------------------------------------------- bind, share, config

def test_binds_to_localhost_without_a_share_link(app, monkeypatch):
    demo, _, _ = app
    assert demo.server_name == "127.0.0.1" and not demo.share and demo.share_url is None
    import inspect

    from conftest import ROOT
    from rag.ui import launch

    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_entry", ROOT / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert entry.address(None, None)[0] == "127.0.0.1"  # the entry point's default


def test_gradio_temp_uploads_are_purged(app):
    assert app[0].delete_cache == (3600, 3600)  # checklist F17: the upload cache is bounded in time


# ---------------------------------------------------------------- #29 file serving: traversal and SSRF

def _paths(app) -> list[str]:
    _, settings, tmp = app
    corpus = settings.corpus_dir.resolve()
    return [
        "/etc/passwd", "/proc/self/environ", str(Path(__file__).resolve()), str(tmp / "secret.txt"),
        str(corpus / "notes.md"), f"{corpus}/../secret.txt", f"{corpus}/../index/CURRENT", f"{corpus}/../../../etc/passwd",
        *[str(p.resolve()) for p in _index_files(settings)], str(settings.cache_dir.resolve() / "model.gguf"),
        "//localhost/share/x", "\\\\host\\share\\x", "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd",
        quote("/etc/passwd", safe=""), str(corpus).upper() + "/NOTES.MD",
    ]


@pytest.mark.parametrize("route", ["/gradio_api/file={}", "/file={}", "/gradio_api/file/{}"])
def test_local_files_outside_the_upload_dir_are_never_served(app, http, route):
    served = []
    for path in _paths(app):
        r = http.get(route.format(path))
        if r.status_code not in (403, 404, 405):
            served.append((path, r.status_code))
        assert b"top secret" not in r.content and b"root:" not in r.content and b"GGUF" not in r.content
    assert served == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:{port}/gradio_api/config",
                                 "http://localhost:{port}/", "http://[::1]:{port}/", "http://0.0.0.0:{port}/",
                                 "http://10.0.0.1/", "file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:25/"])
def test_file_route_fetches_no_internal_url(app, http, url):
    port = http.base_url.port
    for route in ("/gradio_api/file=", "/gradio_api/proxy="):
        r = http.get(route + url.format(port=port))
        assert r.status_code in (400, 403, 404), (route, url, r.status_code)


# ---------------------------------------------------------------- uploads

def test_uploaded_html_and_svg_are_never_served_inline(app, http):
    for name, body, mime in [("x.html", b"<script>alert(document.cookie)</script>", "text/html"),
                             ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml")]:
        r = http.post("/gradio_api/upload", files={"files": (name, body, mime)})
        assert r.status_code == 200, r.text
        stored = r.json()[0]
        got = http.get(f"/gradio_api/file={stored}")
        if got.status_code == 200:  # gradio serves its own upload dir, but as a download, never as a page
            assert not got.headers["content-type"].startswith(("text/html", "image/svg"))
            assert got.headers.get("content-disposition", "").startswith("attachment")
            assert got.headers.get("x-content-type-options", "nosniff") == "nosniff"


def test_upload_over_the_size_limit_is_refused(http):
    from rag.corpus import MAX_UPLOAD_BYTES

    r = http.post("/gradio_api/upload", files={"files": ("big.txt", b"x" * (MAX_UPLOAD_BYTES + 1024), "text/plain")})
    assert r.status_code == 413


def test_upload_names_cannot_escape_the_upload_dir(app, http):
    _, settings, tmp = app
    for name in ["../../escape.txt", "/tmp/escape.txt", "..\\escape.txt"]:
        r = http.post("/gradio_api/upload", files={"files": (name, b"x", "text/plain")})
        if r.status_code == 200:  # stored under gradio's hashed upload dir by basename only
            stored = Path(r.json()[0])
            assert stored.name.endswith("escape.txt") and "/" not in stored.name and ".." not in stored.parts
            assert stored.resolve().parent.parent == Path(app[0].GRADIO_CACHE).resolve()
    assert not (tmp / "escape.txt").exists() and not (settings.corpus_dir / "escape.txt").exists()


# ---------------------------------------------------------------- CORS, API, monitoring

@pytest.mark.parametrize("origin", EVIL_ORIGINS)
def test_foreign_origins_get_no_cors_grant(http, origin):
    for method, path in [("GET", "/gradio_api/config"), ("GET", "/config"), ("POST", "/gradio_api/queue/join"),
                         ("POST", "/gradio_api/upload")]:
        r = http.request(method, path, headers={"Origin": origin})
        assert "access-control-allow-origin" not in r.headers, (method, path, origin)
    pre = http.options("/gradio_api/queue/join", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_api_is_closed(app, http):
    from gradio_client import Client

    info = Client(app[0].local_url, verbose=False).view_api(print_info=False, return_format="dict")
    assert info["named_endpoints"] == {} and info["unnamed_endpoints"] == {}
    body = {"data": ["测试的时候要用 Dropout 吗?", [], 3, False]}
    # No direct REST call skips the queue (api_open=False) ...
    for path in ["/gradio_api/api/ask", "/gradio_api/run/ask", "/gradio_api/api/upload_documents",
                 "/gradio_api/api/delete_document", "/gradio_api/api/reindex", "/gradio_api/run/reindex"]:
        assert http.post(path, json=body).status_code == 404, path
    # ... and gradio's /call routes only join the same bounded, one-at-a-time queue the page uses.
    r = http.post("/gradio_api/call/ask", json=body)
    assert r.status_code in (404, 503) or set(r.json()) == {"event_id"}
    assert http.post("/gradio_api/call/v2/ask", json={"question": "x"}).status_code != 200  # unnamed when private


@pytest.mark.parametrize("path", ["/gradio_api/monitoring", "/gradio_api/monitoring/summary",
                                  "/gradio_api/monitoring/0123456789abcdef", "/monitoring"])
def test_monitoring_is_closed(http, path):
    assert http.get(path).status_code in (403, 404)


# ---------------------------------------------------------------- dependency floors (pip-audit runs in .ci/run)

def test_installed_parsers_are_past_their_latest_advisories():
    """gradio >= 6.20 (the /file= SSRF, CVE-2026-59806) and 6.31 (pinned: every file-serving advisory);
    pypdf >= 6.15 (the 2025-2026 DoS advisories: FlateDecode/LZW RAM, inline-image and xref loops)."""
    from importlib.metadata import version

    def v(s):
        return tuple(int(x) for x in s.split(".")[:3] if x.isdigit())

    assert v(version("gradio")) >= (6, 31), version("gradio")
    assert v(version("pypdf")) >= (6, 15), version("pypdf")
