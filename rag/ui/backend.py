"""The assistant behind the page, shared by every browser tab: which generators are installed, the
current one (switching is global: a laptop keeps one LLM in memory), warm-up in the background, the
status the header shows, and the hooks `rag serve` attaches (generation gate, feedback store)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..config import Settings
from ..corpus import Document, document_status
from ..errors import ModelNotInstalled, RagError
from .render import render_status

log = logging.getLogger(__name__)

QUEUE_SIZE = 16  # waiting jobs; more users get "queue is full" instead of piling up on a laptop


def installed_generators(current: str) -> list[tuple[str, str]]:
    """(label, spec) of packaged GGUF generators whose parts are installed, plus the configured one."""
    from ..weights import PACKAGED, part_files

    out = []
    for name, m in PACKAGED.items():
        if m.kind != "gguf":
            continue
        try:
            part_files(m)
        except ModelNotInstalled:
            continue
        out.append((f"{name}（{m.size / 1e9:.1f} GB）", f"packaged:{name}"))
    if current not in [spec for _, spec in out]:
        out.insert(0, (current, current))
    return out


def short_model(spec: str) -> str:
    return spec.split(":", 1)[1] if spec.startswith("packaged:") else Path(spec).name or spec


class _Bar:
    def __init__(self, tracker, total, desc, unit):
        self.tracker, self.total, self.desc, self.unit, self.n = tracker, total, desc, unit, 0

    def update(self, n=1):
        self.n += n
        self.tracker.report(self)

    def close(self):
        self.tracker.report(None)


class ProgressTracker:
    """tqdm-shaped factory handed to the Assistant: records the current activity for the status bar
    and forwards to a per-thread listener (the gr.Progress of the event doing a re-index)."""

    def __init__(self):
        self.activity = ""
        self.local = threading.local()

    def __call__(self, total=None, desc="", unit="", unit_scale=False, **_):
        return _Bar(self, total, desc, unit)

    def report(self, bar):
        if bar is None:
            self.activity = ""
            return
        # the library's progress labels are English ("assembling <model>", "embedding")
        what = "组装并校验模型文件" if bar.desc.startswith("assembling") else \
            "嵌入段落" if bar.desc == "embedding" else bar.desc
        if bar.unit == "B":
            self.activity = f"{what} {bar.n / 2**20:.0f}/{(bar.total or 0) / 2**20:.0f} MB"
        else:
            self.activity = f"{what} {bar.n}/{bar.total or '?'}"
        listener = getattr(self.local, "listener", None)
        if listener is not None:
            listener(bar)


class Backend:
    """One Assistant shared by every browser tab; the chosen model is global (one LLM in memory)."""

    def __init__(self, settings: Settings, embedder=None, generator=None):
        from ..assistant import Assistant

        self.settings = settings
        self.tracker = ProgressTracker()
        if embedder is None and generator is None:
            self.assistant = Assistant.from_settings(settings, progress=self.tracker, warn=self._warn)
        else:  # models handed in (tests, `rag serve` with loaded parts): the constructor takes parts
            self.assistant = Assistant(settings, embedder=embedder, generator=generator,
                                       progress=self.tracker, warn=self._warn)
        # switching back to a handed-in generator derives from this assistant, so it is the same object
        self._injected = self.assistant if generator is not None else None
        self.state = "idle"  # idle (loads on first question) | loading | ready | error
        self.stage = ""
        self.error = ""
        self._ready: set[str] = set()
        self._lock = threading.Lock()
        self._warming = None
        self._warm_thread: threading.Thread | None = None
        self.gate = None  # rag.gate.GenerationGate under `rag serve`: one slot shared with the HTTP API
        self.feedback = None  # rag.feedback.FeedbackStore: answers are recorded so they can be rated

    def _warn(self, message: str) -> None:
        log.warning(message)

    @property
    def model(self) -> str:
        return self.assistant.settings.generator

    def is_ready(self) -> bool:
        return self.model in self._ready

    def mark_ready(self, spec: str) -> None:
        self._ready.add(spec)
        if spec == self.model:
            self.state, self.stage = "ready", ""

    def warm_up(self, assistant=None) -> None:
        """Load embedder, index and LLM now, so the first question does not pay for it."""
        assistant = assistant or self.assistant

        def current() -> bool:  # a model switch may have replaced it meanwhile
            return assistant is self.assistant

        try:
            # One search loads the index and jieba's dictionary (~1 s): the first question's evidence is
            # then on screen in milliseconds, like every later one's.
            for stage, load in [("嵌入模型", lambda: assistant.embedder), ("索引", lambda: assistant.search("深度学习")),
                                (f"语言模型 {short_model(assistant.settings.generator)}", lambda: assistant.generator)]:
                if current():
                    self.stage = stage
                load()
            self.mark_ready(assistant.settings.generator)
        except RagError as e:
            if current():
                self.state, self.error = "error", str(e)
        except Exception as e:  # the page shows a message, the log keeps the trace
            log.exception("warm-up failed")
            if current():
                self.state, self.error = "error", f"加载失败（{type(e).__name__}: {e}）"

    def warm_up_in_background(self) -> None:
        """Start loading the current assistant's models, once (repeated calls while loading do nothing)."""
        with self._lock:
            assistant = self.assistant
            if self._warming is assistant and self._warm_thread is not None and self._warm_thread.is_alive():
                return
            self.state, self.error = "loading", ""  # before the thread starts: the page shows it at once
            self._warming = assistant
            self._warm_thread = threading.Thread(target=self.warm_up, args=(assistant,), name="rag-warm-up",
                                                 daemon=True)
            self._warm_thread.start()

    def switch_model(self, spec: str) -> None:
        allowed = [s for _, s in installed_generators(self.settings.generator)]
        if spec not in allowed:
            raise ModelNotInstalled(f"未安装的模型：{spec}")
        with self._lock:
            if spec == self.model:
                return
            injected = self._injected is not None and self._injected.settings.generator == spec
            # the previous Assistant (and its LLM) is dropped: a laptop keeps one model in memory;
            # derive() keeps the loaded embedder
            self.assistant = (self._injected if injected else self.assistant).derive(generator=spec)
            if injected:
                self._ready.add(spec)
            else:
                self._ready.discard(spec)
            self.state = "ready" if spec in self._ready else "loading"

    def documents(self) -> list[Document]:
        return document_status(self.settings.corpus_dir, self.settings.index_dir)

    def status_html(self) -> str:
        if self.state == "error":
            return render_status("err", self.error)
        if self.state == "idle":
            return render_status("busy", f"语言模型 {short_model(self.model)} 将在第一次提问时加载")
        if self.state != "ready":
            activity = self.tracker.activity
            return render_status("busy", f"正在加载{self.stage}" + (f" · {activity}" if activity else "…"))
        try:
            idx = self.assistant.index()
            docs, chunks = len(idx.manifest.get("files", {})), idx.manifest["counts"]["chunks"]
        except RagError as e:
            return render_status("err", str(e))
        gen = self.assistant.generator
        return render_status("ok", f"就绪 · {short_model(self.model)} · {gen.backend} · {docs} 个文档 · {chunks} 段",
                             title=self.model)
