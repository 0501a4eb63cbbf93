"""`rag serve`: an OpenAI-compatible HTTP API and the chat UI on one port, one generation queue.

    POST /v1/chat/completions   OpenAI wire format, `stream: true` (SSE) or not. The conversation is
                                `messages`; the last user message is the question, earlier turns are
                                used to rewrite a follow-up (as the UI does). Extra fields on the
                                completion (and on the last stream chunk): `sources` (the retrieved
                                passages the `[n]` markers point to: n, file, line, span, heading,
                                text, id, score, cited), `abstained`, `query` (what was searched),
                                and, on the last chunk, `answer` (the checked text, see below).
    GET  /v1/models             the installed generators (`model` picks one; the first is loaded)
    POST /v1/retrieve           ranked passages only, the `rag search --json` shape
    POST /v1/feedback           👍/👎 (+ correction) on a completion id (rag.feedback)
    /                           the Gradio chat UI (rag.ui), mounted on the same app

Streaming sends the model's tokens as they come; citations are checked once the answer is complete,
so the last chunk carries the checked text in `answer` (markers removed or re-pointed) — clients that
show sources should prefer it. A question the notes do not cover is a normal completion that says
so, with the closest passages as `sources` (all `cited: false`).

Safety: binds 127.0.0.1 by default and refuses any other address unless RAG_API_KEY is set (then
every request needs `Authorization: Bearer <key>`, and the UI asks for it as its password). On
loopback, requests whose Host header is not a loopback name are refused (DNS rebinding). No CORS
headers are ever sent for the API, and it only accepts application/json bodies (so a page on another
origin cannot post to it without a preflight that is never granted). Bodies are capped at
MAX_BODY_BYTES. Answers share rag.gate's single slot with the UI: 429 + Retry-After when the wait
list is full, 503 + Retry-After while the model loads or when the wait ran out, 504 when the
watchdog stopped a stalled answer. A client that disconnects cancels its answer.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path

from .errors import CorpusError, RagError, SettingsError
from .openai_format import MAX_BODY_BYTES, ApiError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8000
# No event (token) for this long ends the answer (env RAG_STALL_SECONDS). Generous: before the first
# token come a follow-up rewrite and the prompt's prefill, ~35 s for the 1.5B model on a busy 2-core CPU.
STALL_SECONDS = 90.0
BUDGET_SECONDS = 300.0  # one answer's total time, and the longest wait for the slot (env RAG_BUDGET_SECONDS)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


# ================================================================ the service (no HTTP)

class Service:
    """The backend shared with the UI, the gate, and the feedback store."""

    def __init__(self, backend, gate, feedback=None):
        self.backend, self.gate, self.feedback = backend, gate, feedback

    def models(self) -> list[str]:
        from .ui import installed_generators

        current = self.backend.model
        specs = [s for _, s in installed_generators(current)]
        return [current] + [s for s in specs if s != current]

    def check_model(self, requested) -> str | None:
        """None when `requested` is the loaded model (or unset); else the installed spec to switch to."""
        if requested in (None, "", "rag", "default", self.backend.model):
            return None
        from .ui import short_model

        for spec in self.models():
            if requested in (spec, short_model(spec)):
                return None if spec == self.backend.model else spec
        raise ApiError(404, f"model {requested!r} is not installed; GET /v1/models lists the installed ones",
                       code="model_not_found")

    def check_ready(self) -> None:
        b = self.backend
        if b.state == "error":
            raise ApiError(503, f"the models failed to load: {b.error}", "server_error", "model_error")
        if not b.is_ready():
            if b.state == "idle":
                b.warm_up_in_background()
            raise ApiError(503, f"loading the language model {b.model}; try again shortly", "server_busy",
                           "model_loading", {"Retry-After": "5"})

    def switch(self, spec: str) -> None:
        """Swap the global model (as the UI's setting does), holding the slot so no answer is running."""
        slot = self.gate.acquire()
        try:
            self.backend.switch_model(spec)
        finally:
            slot.release()
        self.backend.warm_up_in_background()

    def answer_events(self, question: str, history, k: int | None):
        assistant = self.backend.assistant
        return lambda: assistant.ask(question, k, history=history)


# ================================================================ HTTP

def create_app(service: Service, api_key: str = "", loopback_only: bool = True, gradio_api: bool = False,
               mount_ui: bool = True):
    from fastapi import FastAPI

    from .routes import Routes

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, title="rag")
    # plain Starlette routes: the handlers read the request themselves (size cap, content type)
    for path, handler, methods in Routes(service).table():
        app.router.add_route(path, handler, methods=methods)
    return Guard(app, api_key, loopback_only)


class Guard:
    """ASGI wrapper: Host check on loopback (DNS rebinding), the bearer token for /v1, a Content-Length
    cap before any body is read."""

    def __init__(self, app, api_key: str, loopback_only: bool, max_body: int = MAX_BODY_BYTES):
        self.app, self.api_key, self.loopback_only, self.max_body = app, api_key, loopback_only, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.loopback_only:
            host = headers.get("host", "")
            name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
            if not is_loopback(name):
                return await self._refuse(scope, send, 421, f"this server only answers requests to localhost, "
                                                             f"not {host!r}", "bad_host")
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            if self.api_key:
                auth = headers.get("authorization", "")
                token = auth[7:] if auth[:7].lower() == "bearer " else ""
                if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                    return await self._refuse(scope, send, 401, "missing or wrong API key (Authorization: Bearer …)",
                                              "invalid_api_key", {"WWW-Authenticate": "Bearer"})
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body:
                return await self._refuse(scope, send, 413, f"request body over {self.max_body // 1024} KB",
                                          "body_too_large")
        return await self.app(scope, receive, send)

    async def _refuse(self, scope, send, status, message, code, headers=None):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = json.dumps(ApiError(status, message, "invalid_request_error", code).body()).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})


# ================================================================ assembling and running

def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise RagError(f"{name} must be a number of seconds, not {raw!r}") from None


def env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        port = int(raw) if raw else default
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise SettingsError(f"{name}={raw!r}: expected a port number (1-65535)")
    return port


class Running:
    """A server started with block=False; close() stops it."""

    def __init__(self, server, thread, url, service):
        self.server, self.thread, self.url, self.service = server, thread, url, service

    def close(self):
        self.server.should_exit = True
        self.thread.join(15)


def serve(settings=None, host: str = "127.0.0.1", port: int | None = None, api_key: str | None = None,
          stall: float | None = None, budget: float | None = None, gradio_api: bool = False, ui: bool = True,
          embedder=None, generator=None, block: bool = True, feedback_db: Path | None = None, quiet: bool = False):
    """Build the app (API + mounted UI) and run it with uvicorn."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import uvicorn

    from . import ui as rag_ui
    from .config import Settings
    from .feedback import FeedbackStore, default_path
    from .gate import GenerationGate

    settings = settings or Settings.from_env()
    api_key = os.environ.get("RAG_API_KEY", "") if api_key is None else api_key
    port = port or env_port("RAG_PORT", DEFAULT_PORT)
    if not is_loopback(host) and not api_key:
        raise RagError(f"refusing to listen on {host} without an API key: set RAG_API_KEY (clients then send "
                       f"'Authorization: Bearer <key>'), or keep the default 127.0.0.1")
    if not Path(settings.corpus_dir).is_dir():
        raise CorpusError(f"corpus directory not found: {settings.corpus_dir}")
    gate = GenerationGate(max_waiting=rag_ui.QUEUE_SIZE,
                          stall=stall or env_float("RAG_STALL_SECONDS", STALL_SECONDS),
                          budget=budget or env_float("RAG_BUDGET_SECONDS", BUDGET_SECONDS))
    backend = rag_ui.Backend(settings, embedder=embedder, generator=generator)
    backend.gate = gate  # the UI's answers take the same slot, with the same watchdog
    store = FeedbackStore(feedback_db or default_path(settings))
    backend.feedback = store
    service = Service(backend, gate, store)
    backend.warm_up_in_background()
    app = create_app(service, api_key, loopback_only=is_loopback(host), gradio_api=gradio_api, mount_ui=ui)
    if ui:
        mount_ui(app.app, backend, settings, api_key, gradio_api, host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning" if quiet else "info",
                            timeout_graceful_shutdown=2, limit_concurrency=512, access_log=not quiet)
    server = uvicorn.Server(config)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    if block:
        if not quiet:
            print(f"rag serve: API at {url}/v1 · chat UI at {url}/ · model {settings.generator}", flush=True)
        server.run()
        return None
    thread = threading.Thread(target=server.run, name="rag-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RagError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    return Running(server, thread, url, service)


def mount_ui(app, backend, settings, api_key: str, gradio_api: bool, host: str, port: int):
    import gradio as gr

    from . import ui as rag_ui

    demo = rag_ui.build_app(backend, api=gradio_api)
    demo.queue(max_size=rag_ui.QUEUE_SIZE, api_open=False, default_concurrency_limit=1)
    demo.state_session_capacity = rag_ui.SESSIONS  # what launch(state_session_capacity=) sets; read at mount
    private = [str(Path(p).resolve()) for p in (settings.corpus_dir, settings.index_dir, settings.cache_dir)]
    auth = (lambda user, password: hmac.compare_digest(password.encode(), api_key.encode())) if api_key else None
    gr.mount_gradio_app(
        app, demo, path="/", server_name=host, server_port=port, auth=auth, auth_message="密码是服务端的 RAG_API_KEY" if api_key else None,
        show_error=False, ssr_mode=False, mcp_server=False, pwa=False, allowed_paths=[], blocked_paths=private,
        max_file_size=rag_ui.MAX_UPLOAD_BYTES, enable_monitoring=False, theme=rag_ui.theme(), css=rag_ui.CSS,
        head=rag_ui.HEAD, footer_links=(["api", "gradio"] if gradio_api else ["gradio"]))
    return demo
