#!/usr/bin/env python3
"""Load test of the chat UI through gradio_client (reliability checklist 6.3).

    python eval/loadtest.py                   # fake models; report in eval/results/loadtest.{md,json}
    python eval/loadtest.py --models real     # the packaged models (slow: keep --levels small)

The UI runs in its own process (so its peak RSS is its own), launched exactly as `python app.py` does
(rag.ui.launch: one LLM job at a time, a bounded queue, API closed to REST) except that the API is
opened for gradio_client. With `--models fake` the embedder is the hashed-bigram fake and the LLM a
fake that streams its answer at --token-delay seconds per piece, so the service time S is known and
the numbers measure the UI and queue, not the model. Scenarios:

  L1  one user asks --questions questions in a row: p50/p95 of S;
  L2  ramp of concurrent users (--levels): latency ~ queue position x S, no errors below the queue size;
  L3  a burst of --burst submissions at once: about queue-size accepted, the rest told "queue is full"
      within a second, the server healthy afterwards;
  L6  a client killed mid-answer: its slot is freed, the next user is not delayed by the dead answer;
  L7  a rebuild of the index (another process) during a level of the ramp: zero failed questions.
Server RSS is sampled from /proc throughout (peak, and growth after warm-up).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

QUESTIONS = ["测试的时候要用 dropout 吗？", "Batch Normalization 有什么作用？", "如何缓解梯度消失问题？",
             "学习率太大会怎样？", "为什么要用 1x1 卷积？", "过拟合有哪些解决办法？", "什么是感受野？",
             "Adam 和 SGD 有什么区别？", "ReLU 相比 sigmoid 有什么优点？", "一千万个人脸向量怎么快速找到新的人脸？"]


# ---------------------------------------------------------------- the server (a child process)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(workdir: Path, port: int, models: str = "fake", queue_size: int | None = None, token_delay: float = 0.05,
          block: bool = True):
    """Launch the UI on 127.0.0.1:port over a copy of corpus/ (index built first)."""
    from rag import ui
    from rag.assistant import Assistant
    from rag.config import Settings

    corpus, index_dir = workdir / "corpus", workdir / "index"
    if not corpus.exists():
        shutil.copytree(ROOT / "corpus", corpus)
    if models == "fake":  # the fake answer streamed at a fixed pace: a known service time without weights
        settings = Settings(corpus_dir=corpus, index_dir=index_dir, cache_dir=workdir / "cache",
                            embedder="fake", generator=f"fake:delay={token_delay}")
    else:
        settings = Settings.from_env(corpus_dir=corpus, index_dir=index_dir)
    Assistant.from_settings(settings).build()
    return ui.launch(settings, port=port, api=True, warm_up=True, block=block, quiet=True,
                     queue_size=queue_size or ui.QUEUE_SIZE)


def start_server(workdir: Path, models: str, queue_size: int | None, token_delay: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port), "--workdir", str(workdir),
           "--models", models, "--token-delay", str(token_delay)] + (["--queue-size", str(queue_size)] if queue_size else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def wait_ready(url: str, timeout: float = 600) -> None:
    """Until the models are loaded (the page's status says ready) and one question gets an answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = ask(client(url), QUESTIONS[0], timeout=timeout)
        if r["ok"]:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"server not answering: {r}")
        time.sleep(1)


# ---------------------------------------------------------------- clients

def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def ask(c, question: str, timeout: float = 300, k: int = 3) -> dict:
    """One question through the queue. Latency to the first streamed update and to the final answer."""
    from gradio_client.exceptions import AppError

    t0 = time.perf_counter()
    first = None
    try:
        job = c.submit(question, [], k, False, api_name="/ask")
        # Poll rather than iterate: gradio_client's iterator never ends on a job the queue refused.
        deadline = time.monotonic() + timeout
        while not job.done() and time.monotonic() < deadline:
            if first is None and job.outputs():
                first = time.perf_counter() - t0
            time.sleep(0.005)
        if first is None and job.outputs():
            first = time.perf_counter() - t0
        chat = job.result(timeout=max(1.0, deadline - time.monotonic()))
        total = time.perf_counter() - t0
        text = str(chat[-1]["content"]) if chat else ""
        ok = "rag-answer" in text and "rag-error" not in text
        return {"ok": ok, "latency": total, "first": first, "error": None if ok else "bad answer: " + text[:120]}
    except Exception as e:  # noqa: BLE001 - classified below
        kind = "queue_full" if "Queue is full" in str(e) or type(e).__name__ == "QueueError" else "error"
        if isinstance(e, AppError) and "Queue is full" in str(e):
            kind = "queue_full"
        return {"ok": False, "latency": time.perf_counter() - t0, "first": first, "error": kind,
                "detail": f"{type(e).__name__}: {e}"[:200]}


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3)


def summary(results: list[dict]) -> dict:
    lat = [r["latency"] for r in results if r["ok"]]
    first = [r["first"] for r in results if r["ok"] and r["first"] is not None]
    return {"n": len(results), "ok": len(lat), "errors": sum(1 for r in results if r["error"] == "error"),
            "queue_full": sum(1 for r in results if r["error"] == "queue_full"),
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "max": pct(lat, 1.0), "first_p50": pct(first, 0.5),
            "details": sorted({r.get("detail") or r["error"] for r in results if r["error"]})[:5]}


def concurrent(url: str, users: int, per_user: int, barrier: bool = True) -> list[dict]:
    clients = [client(url) for _ in range(users)]
    gate = threading.Barrier(users)
    results: list[dict] = []
    lock = threading.Lock()

    def user(i: int):
        if barrier:
            gate.wait()
        for j in range(per_user):
            r = ask(clients[i], QUESTIONS[(i + j) % len(QUESTIONS)])
            with lock:
                results.append(r)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def disconnect_frees_slot(url: str, service_s: float) -> dict:
    """Kill a client process after its first streamed update; time the next user's answer."""
    code = ("import sys, os; sys.path[:0] = sys.argv[2:]\n"
            "from gradio_client import Client\n"
            "job = Client(sys.argv[1], verbose=False).submit('测试的时候要用 dropout 吗？', [], 3, False, api_name='/ask')\n"
            "for update in job:\n"
            "    print('streaming', flush=True); os._exit(0)\n")
    p = subprocess.Popen([sys.executable, "-c", code, url, str(ROOT)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "streaming"
    p.wait()
    t0 = time.perf_counter()
    r = ask(client(url), "学习率太大会怎样？")
    r["after_disconnect_s"] = round(time.perf_counter() - t0, 3)
    r["service_s"] = round(service_s, 3)
    return r


class RssSampler:
    """Resident memory of a process from /proc, sampled in the background."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()
        self._t.start()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, self.rss_mb()))
            except OSError:
                return
            self._stop.wait(self.every)

    def mark(self) -> float:
        return round(self.rss_mb(), 1)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return round(max((m for _, m in self.samples), default=0.0), 1)


def rebuild_during(workdir: Path, url: str, users: int, per_user: int) -> dict:
    """L7: another process rebuilds the index the server reads (a new note) while users ask."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("killloop", ROOT / "eval" / "killloop.py")
    killloop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(killloop)
    (workdir / "corpus" / "loadtest-note.md").write_text("1. 负载测试期间新增的问题?\n负载测试期间写入的独特答案。\n",
                                                          encoding="utf-8")
    out: dict = {}

    def rebuild():
        time.sleep(0.5)
        t = time.perf_counter()
        res = killloop.run_child(workdir / "corpus", workdir / "index")
        out.update(rc=res.returncode, seconds=round(time.perf_counter() - t, 2))

    th = threading.Thread(target=rebuild)
    th.start()
    results = concurrent(url, users, per_user)
    th.join()
    new = ask(client(url), "负载测试期间新增的问题?")
    return {**summary(results), "rebuild_rc": out.get("rc"), "rebuild_s": out.get("seconds"),
            "new_note_answered": new["ok"]}


# ---------------------------------------------------------------- the run

def run(models: str = "fake", levels=(1, 2, 4, 8, 16), per_user: int = 2, questions: int = 20, burst: int = 50,
        queue_size: int | None = None, token_delay: float = 0.05, log=print) -> dict:
    from rag import ui

    queue = queue_size or ui.QUEUE_SIZE
    work = Path(tempfile.mkdtemp(prefix="loadtest-"))
    proc, url = start_server(work, models, queue_size, token_delay)
    report: dict = {"models": models, "queue_size": queue, "token_delay": token_delay, "url": url}
    try:
        wait_ready(url)
        rss = RssSampler(proc.pid)
        report["rss_after_warm_up_mb"] = rss.mark()
        c = client(url)
        l1 = [ask(c, QUESTIONS[i % len(QUESTIONS)]) for i in range(questions)]
        report["L1"] = summary(l1)
        service = report["L1"]["p50"] or 1.0
        log(f"L1 1 user x {questions}: p50 {report['L1']['p50']}s p95 {report['L1']['p95']}s")
        report["L2"] = {}
        for n in levels:
            s = summary(concurrent(url, n, per_user))
            s["rss_mb"] = rss.mark()
            report["L2"][str(n)] = s
            log(f"L2 {n:>2} users x {per_user}: p50 {s['p50']}s p95 {s['p95']}s errors {s['errors']} "
                f"queue_full {s['queue_full']} rss {s['rss_mb']} MB")
        rss_before_burst = rss.mark()
        b = concurrent(url, burst, 1)
        rejected = [r for r in b if r["error"] == "queue_full"]
        report["L3"] = {**summary(b), "accepted": sum(1 for r in b if r["ok"]),
                        "reject_p95_s": pct([r["latency"] for r in rejected], 0.95),
                        "reject_max_s": pct([r["latency"] for r in rejected], 1.0),
                        "healthy_after": ask(c, QUESTIONS[1])["ok"], "rss_mb": rss.mark()}
        log(f"L3 burst {burst}: accepted {report['L3']['accepted']}, queue full {len(rejected)} "
            f"(answered in <= {report['L3']['reject_max_s']}s), errors {report['L3']['errors']}")
        report["L6"] = disconnect_frees_slot(url, service)
        log(f"L6 next answer after a killed client: {report['L6']['after_disconnect_s']}s (S = {service}s)")
        if models == "fake":
            report["L7"] = rebuild_during(work, url, min(4, max(levels)), per_user)
            log(f"L7 rebuild during 4 users: errors {report['L7']['errors']}, rebuild rc {report['L7']['rebuild_rc']}, "
                f"new note answered {report['L7']['new_note_answered']}")
        report["rss_growth_in_burst_mb"] = round(report["L3"]["rss_mb"] - rss_before_burst, 1)
        report["rss_peak_mb"] = rss.stop()
        report["rss_growth_mb"] = round(report["rss_peak_mb"] - report["rss_after_warm_up_mb"], 1)
        all_below = [s for n, s in report["L2"].items() if int(n) <= queue]
        report["errors_below_queue_size"] = sum(s["errors"] + s["queue_full"] for s in all_below) + report["L1"]["errors"]
        report["errors_total"] = (report["errors_below_queue_size"] + report["L3"]["errors"]
                                  + (report.get("L7", {}).get("errors") or 0))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return report


def markdown(r: dict) -> str:
    rows = [f"| {n} | {s['n']} | {s['p50']} | {s['p95']} | {s['max']} | {s['errors']} | {s['queue_full']} | {s['rss_mb']} |"
            for n, s in r["L2"].items()]
    l3, l6 = r["L3"], r["L6"]
    lines = [
        "# Load test (checklist 6.3)",
        "",
        f"`python eval/loadtest.py --models {r['models']}`: the UI (rag.ui.launch, one LLM job at a time, queue "
        f"max_size {r['queue_size']}, API closed to REST) in its own process, driven by gradio_client."
        + (f" Fake models: the LLM streams its answer at {r['token_delay']} s per piece, so the service time S "
           "is fixed and the numbers measure the UI and its queue." if r["models"] == "fake" else ""),
        "",
        f"**L1** one user, {r['L1']['n']} questions in a row: p50 {r['L1']['p50']} s, p95 {r['L1']['p95']} s "
        f"(first streamed update p50 {r['L1']['first_p50']} s), errors {r['L1']['errors']}.",
        "",
        "**L2** concurrent users, each asking in a loop (latency in s, end to end):",
        "",
        "| users | questions | p50 | p95 | max | errors | queue full | server RSS MB |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"**L3** burst of {l3['n']} submissions at once: {l3['accepted']} answered, {l3['queue_full']} told "
        f"\"queue is full\" (p95 {l3['reject_p95_s']} s, max {l3['reject_max_s']} s after submitting), "
        f"other errors {l3['errors']}; server healthy afterwards: {l3['healthy_after']}.",
        "",
        f"**L6** a client killed mid-answer: the next user's answer took {l6['after_disconnect_s']} s "
        f"(S = {l6['service_s']} s) — the dead answer did not hold the slot.",
        "",
    ]
    if "L7" in r:
        l7 = r["L7"]
        lines += [f"**L7** rebuild in another process while {l7['n']} questions were asked: errors {l7['errors']}, "
                  f"p95 {l7['p95']} s, rebuild exit {l7['rebuild_rc']} in {l7['rebuild_s']} s, "
                  f"new note answered after the swap: {l7['new_note_answered']}.", ""]
    lines += [f"**Memory** server RSS after warm-up {r['rss_after_warm_up_mb']} MB, peak {r['rss_peak_mb']} MB "
              f"(growth {r['rss_growth_mb']} MB over the whole run).", "",
              f"**Errors** below the queue size: {r['errors_below_queue_size']}; total (excluding \"queue is full\"): "
              f"{r['errors_total']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Load test of the chat UI (checklist 6.3).")
    p.add_argument("--models", choices=["fake", "real"], default="fake")
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrent users per ramp step")
    p.add_argument("--per-user", type=int, default=2, help="questions per user per ramp step")
    p.add_argument("--questions", type=int, default=20, help="L1: questions from one user")
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--queue-size", type=int, help="override rag.ui.QUEUE_SIZE")
    p.add_argument("--token-delay", type=float, default=0.05, help="fake LLM: seconds per streamed piece")
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        demo = serve(args.workdir, args.port, args.models, args.queue_size, args.token_delay, block=False)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *a: stop.set())
        print(f"ready {demo.local_url}", flush=True)
        while not stop.wait(1):
            pass
        demo.close()
        return 0
    report = run(args.models, tuple(int(x) for x in args.levels.split(",")), args.per_user, args.questions, args.burst,
                 args.queue_size, args.token_delay)
    print(f"p50 {report['L1']['p50']}s p95 {report['L1']['p95']}s (one user); errors {report['errors_total']}; "
          f"peak server RSS {report['rss_peak_mb']} MB")
    if not args.no_report:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "loadtest" if args.models == "fake" else "loadtest-real"
        (args.out / f"{name}.json").write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        (args.out / f"{name}.md").write_text(markdown(report))
        print(f"report: {args.out / name}.md")
    return 0 if report["errors_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
