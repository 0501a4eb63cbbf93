#!/usr/bin/env python3
"""Soak test of `rag serve`: a steady request rate for a long time, watching errors, latency, memory
and file descriptors of the server process.

    nice -n 15 python eval/soak.py --minutes 60 --rate 2            # fake models (known service time)
    nice -n 15 python eval/soak.py --models real --minutes 15 --rate 0.05

The server runs in its own process (so RSS and fds are its own): with `--models real` it is the
`rag serve` command itself; with `--models fake` it is the same `rag.server.serve()` with the fake
embedder and a fake LLM paced at --token-delay s per piece (injected, so it needs this script's
`--serve` mode). Requests start on a fixed schedule (open loop: a slow answer does not slow the
arrivals) and mix what clients do: plain and streamed chat completions, follow-ups with history,
questions outside the notes, retrieval only, and feedback on some answers. A 429 (queue full) is
counted as a refusal, anything else that is not a complete answer as an error.

Writes eval/results/soak.{md,json,png}: errors by kind, p50/p95/p99 latency (and time to first token
for streams), RSS sampled every --sample seconds (growth after warm-up), open file descriptors and
threads at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
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
OUTSIDE = ["量子色动力学中的渐近自由是什么", "今天北京的天气怎么样", "How do I bake sourdough bread?"]
FOLLOW_UPS = ["那它有什么缺点？", "能举个例子吗？"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the server (a child process)

def serve_fake(workdir: Path, port: int, token_delay: float) -> None:
    from rag.assistant import Assistant
    from rag.config import Settings
    from rag.server import serve

    # the scripted fake (rag.fakes): paced, stalls/slows on cue, and answers follow-up rewrites
    settings = Settings(corpus_dir=workdir / "corpus", index_dir=workdir / "index", cache_dir=workdir / "cache",
                        embedder="fake", generator=f"fake:delay={token_delay},rewrite=Batch Normalization 有什么缺点？")
    Assistant.from_settings(settings).build()
    print("ready", flush=True)
    serve(settings, port=port, quiet=True, gradio_api=True, feedback_db=workdir / "feedback.sqlite3")


def start_server(workdir: Path, models: str, token_delay: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    shutil.copytree(ROOT / "corpus", workdir / "corpus")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if models == "fake":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port),
               "--workdir", str(workdir), "--token-delay", str(token_delay)]
    else:
        subprocess.run([sys.executable, "-m", "rag.cli", "index", "--corpus", str(workdir / "corpus"),
                        "--index-dir", str(workdir / "index"), "--chunk-kv", "off"], check=True, env=env, cwd=workdir)
        cmd = [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--gradio-api", "--corpus", str(workdir / "corpus"),
               "--index-dir", str(workdir / "index"), "--feedback-db", str(workdir / "feedback.sqlite3")]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL if models == "real" else subprocess.PIPE,
                            text=True)
    if models == "fake" and proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("server did not start")
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, timeout: float = 900) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{url}/v1/chat/completions", timeout=600,
                           json={"messages": [{"role": "user", "content": QUESTIONS[0]}]})
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit("server not answering")


# ---------------------------------------------------------------- measuring the server process

def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return {"rss_mb": round(out["VmRSS"] / 1024, 1), "threads": out["Threads"],
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


# ---------------------------------------------------------------- clients

def one_request(url: str, kind: str, rng: random.Random, timeout: float) -> dict:
    import httpx

    t0 = time.perf_counter()
    row = {"kind": kind, "t": time.time()}
    try:
        with httpx.Client(base_url=url, timeout=timeout) as h:
            if kind == "ui":  # the chat UI mounted on the same port, through the same generation slot
                from gradio_client import Client

                chat = Client(url + "/", verbose=False, download_files=False).submit(
                    rng.choice(QUESTIONS), [], 3, False, api_name="/ask").result(timeout=timeout)
                content = chat[-1]["content"]
                text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
                r = type("R", (), {"status_code": 200})()
                ok = "rag-answer" in text and "rag-error" not in text
            elif kind == "retrieve":
                r = h.post("/v1/retrieve", json={"query": rng.choice(QUESTIONS), "k": 5})
                ok = r.status_code == 200 and bool(r.json()["results"])
            else:
                q = rng.choice(OUTSIDE if kind == "outside" else QUESTIONS)
                messages = [{"role": "user", "content": q}]
                if kind == "follow_up":
                    messages += [{"role": "assistant", "content": "它把每层输出归一化 [1]。"},
                                 {"role": "user", "content": rng.choice(FOLLOW_UPS)}]
                body = {"model": "default", "messages": messages, "stream": kind == "stream"}
                if kind == "stream":
                    text, extra, first = "", None, None
                    with h.stream("POST", "/v1/chat/completions", json=body) as r:
                        if r.status_code == 200:
                            for line in r.iter_lines():
                                if not line.startswith("data: ") or line == "data: [DONE]":
                                    continue
                                c = json.loads(line[6:])
                                if "error" in c:
                                    raise RuntimeError(c["error"]["message"])
                                piece = c["choices"][0]["delta"].get("content")
                                if piece and first is None:
                                    first = time.perf_counter() - t0
                                text += piece or ""
                                if c["choices"][0]["finish_reason"]:
                                    extra = c
                        else:
                            r.read()
                    row["ttft"] = first
                    ok = r.status_code == 200 and extra is not None and bool(text)
                else:
                    r = h.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
                    if ok and rng.random() < 0.2:  # some users rate the answer
                        f = h.post("/v1/feedback", json={"id": r.json()["id"], "rating": rng.choice(["up", "down"])})
                        ok = f.status_code == 200
            row["status"] = r.status_code
            row["outcome"] = "ok" if ok else ("refused" if r.status_code == 429 else f"http {r.status_code}")
    except Exception as e:  # timeouts, resets, stream errors: all errors
        row["outcome"] = f"{type(e).__name__}: {str(e)[:120]}"
    row["latency"] = time.perf_counter() - t0
    return row


def pick_kind(rng: random.Random, ui_share: float = 0.05) -> str:
    if rng.random() < ui_share:
        return "ui"
    x = rng.random()
    return ("plain" if x < 0.44 else "stream" if x < 0.70 else "follow_up" if x < 0.81 else "outside" if x < 0.92
            else "retrieve")


# ---------------------------------------------------------------- report

def pct(values: list[float], p: float):
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))], 3)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except OSError:
        return None


def summarize(rows: list[dict], samples: list[dict], args, start: dict, end: dict, wall: float) -> dict:
    ok = [r for r in rows if r["outcome"] == "ok"]
    errors: dict[str, int] = {}
    for r in rows:
        if r["outcome"] not in ("ok", "refused"):
            errors[r["outcome"]] = errors.get(r["outcome"], 0) + 1
    warm = [s for s in samples if s["t"] >= args.warm_up * 60] or samples
    base, last = warm[0]["rss_mb"], samples[-1]["rss_mb"]
    slope = None
    if len(warm) >= 3:
        xs, ys = [s["t"] / 3600 for s in warm], [s["rss_mb"] for s in warm]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sum((x - mx) ** 2 for x in xs) or 1)
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        ks = [r for r in rows if r["kind"] == kind]
        kl = [r["latency"] for r in ks if r["outcome"] == "ok"]
        by_kind[kind] = {"n": len(ks), "ok": len(kl), "p50_s": pct(kl, 50), "p95_s": pct(kl, 95)}
    ttft = [r["ttft"] for r in ok if r.get("ttft") is not None]
    lat = [r["latency"] for r in ok]
    return {
        "meta": {"models": args.models, "minutes": round(wall / 60, 1), "rate_per_s": args.rate, "ui_share": args.ui_share,
                 "token_delay_s": args.token_delay if args.models == "fake" else None,
                 "warm_up_minutes": args.warm_up, "sample_s": args.sample,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "command": "python eval/soak.py " + " ".join(sys.argv[1:]), "commit": args.commit},
        "requests": len(rows), "ok": len(ok), "refused_429": sum(r["outcome"] == "refused" for r in rows),
        "errors": sum(errors.values()), "error_kinds": errors,
        "latency_s": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99), "max": pct(lat, 100)},
        "ttft_stream_s": {"p50": pct(ttft, 50), "p95": pct(ttft, 95)},
        "by_kind": by_kind,
        "rss_mb": {"after_warm_up": base, "end": last, "max": max(s["rss_mb"] for s in samples),
                   "growth_pct": round(100 * (last - base) / base, 1), "slope_mb_per_hour": None if slope is None
                   else round(slope, 2)},
        "fds": {"start": start["fds"], "end": end["fds"]}, "threads": {"start": start["threads"], "end": end["threads"]},
        "samples": samples,
    }


def plot(report: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["samples"]
    t0 = rows[0]["t"] if rows else 0
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot([x["t"] / 60 for x in s], [x["rss_mb"] for x in s], color="tab:blue")
    base = report["rss_mb"]["after_warm_up"]
    a1.axhspan(base * 0.9, base * 1.1, color="tab:green", alpha=0.12, label="±10% of RSS after warm-up")
    a1.set_ylabel("server RSS (MB)")
    a1.legend(loc="lower right")
    a1.set_title(f"rag serve soak ({report['meta']['models']} models, {report['meta']['rate_per_s']} req/s): "
                 f"{report['errors']} errors / {report['requests']} requests")
    ok = [r for r in rows if r["outcome"] == "ok"]
    a2.scatter([(r["t"] - t0) / 60 for r in ok], [r["latency"] for r in ok], s=2, alpha=0.3, color="tab:gray")
    bad = [r for r in rows if r["outcome"] not in ("ok", "refused")]
    if bad:
        a2.scatter([(r["t"] - t0) / 60 for r in bad], [r["latency"] for r in bad], s=12, color="tab:red", label="errors")
        a2.legend()
    a2.set_yscale("log")
    a2.set_ylabel("latency (s)")
    a2.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_md(report: dict, path: Path) -> None:
    m, r = report["meta"], report
    lines = [f"# `rag serve` soak: {m['models']} models, {m['minutes']} min at {m['rate_per_s']} req/s", "",
             f"{m['date']} · commit {m['commit']} · `{m['command']}`" + (f" · fake LLM paced at {m['token_delay_s']} s per piece"
                                                   if m["token_delay_s"] else ""), "",
             "| requests | complete answers | refused (429) | errors | p50 | p95 | p99 | stream first token p50 / p95 |",
             "|---|---|---|---|---|---|---|---|",
             f"| {r['requests']} | {r['ok']} | {r['refused_429']} | **{r['errors']}** | {r['latency_s']['p50']} s | "
             f"{r['latency_s']['p95']} s | {r['latency_s']['p99']} s | {r['ttft_stream_s']['p50']} / "
             f"{r['ttft_stream_s']['p95']} s |", "",
             "| server | start | end |", "|---|---|---|",
             f"| RSS (MB) | {r['rss_mb']['after_warm_up']} (after {m['warm_up_minutes']} min warm-up) | {r['rss_mb']['end']} "
             f"({r['rss_mb']['growth_pct']:+} %, max {r['rss_mb']['max']}, trend {r['rss_mb']['slope_mb_per_hour']} MB/h) |",
             f"| open file descriptors | {r['fds']['start']} | {r['fds']['end']} |",
             f"| threads | {r['threads']['start']} | {r['threads']['end']} |", "",
             "| request kind | n | ok | p50 | p95 |", "|---|---|---|---|---|"]
    for kind, k in r["by_kind"].items():
        lines.append(f"| {kind} | {k['n']} | {k['ok']} | {k['p50_s']} s | {k['p95_s']} s |")
    if r["error_kinds"]:
        lines += ["", "Errors:", ""] + [f"- {n} × {kind}" for kind, n in r["error_kinds"].items()]
    lines += ["", f"![RSS and latency over time]({path.with_suffix('.png').name})", "",
              "Kinds: `plain` chat completion (20% also rated via /v1/feedback), `stream` (SSE), `follow_up` "
              "(with history: rewrite + answer), `outside` (not in the notes: declined with closest passages), "
              "`retrieve` (/v1/retrieve), `ui` (a question through the mounted chat UI with gradio_client). Requests start on a fixed schedule; RSS/fds/threads are the server "
              "process's, from /proc."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", choices=["fake", "real"], default="fake")
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--rate", type=float, default=2.0, help="requests started per second")
    p.add_argument("--token-delay", type=float, default=0.02, help="fake LLM: seconds per streamed piece")
    p.add_argument("--warm-up", type=float, default=2.0, help="minutes before the RSS baseline")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--timeout", type=float, default=600, help="client timeout per request")
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results")
    p.add_argument("--name", default="soak", help="report file stem")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--ui-share", type=float, default=0.05, help="share of questions asked through the chat UI "
                   "(each a new browser session)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve_fake(args.workdir, args.port, args.token_delay)
        return 0

    args.commit = git_commit()  # the code the server runs: taken now, the soak lasts an hour
    workdir = Path(tempfile.mkdtemp(prefix="rag-soak-"))
    proc, url = start_server(workdir, args.models, args.token_delay)
    try:
        wait_ready(url)
        start = proc_status(proc.pid)
        rng = random.Random(args.seed)
        rows, lock, threads = [], threading.Lock(), []
        samples = []
        t0 = time.monotonic()
        end_at = t0 + args.minutes * 60
        next_sample = t0
        i = 0

        def run(kind, seed):
            row = one_request(url, kind, random.Random(seed), args.timeout)
            with lock:
                rows.append(row)

        while time.monotonic() < end_at:
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - t0, 1), **proc_status(proc.pid)})
                next_sample += args.sample
                done = len(rows)
                bad = sum(r["outcome"] not in ("ok", "refused") for r in rows)
                if sys.stderr.isatty() or len(samples) % max(1, round(60 / args.sample)) == 1:
                    print(f"{(now - t0) / 60:5.1f} min  {done} done  {bad} errors  rss {samples[-1]['rss_mb']} MB  "
                          f"fds {samples[-1]['fds']}", end="\r" if sys.stderr.isatty() else "\n", file=sys.stderr,
                          flush=True)
            t = threading.Thread(target=run, args=(pick_kind(rng, args.ui_share), rng.random()), daemon=True)
            t.start()
            threads.append(t)
            threads = [x for x in threads if x.is_alive()]
            i += 1
            time.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
        for t in threads:
            t.join(args.timeout)
        time.sleep(2)
        samples.append({"t": round(time.monotonic() - t0, 1), **proc_status(proc.pid)})
        end = proc_status(proc.pid)
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(file=sys.stderr)
    rows.sort(key=lambda r: r["t"])
    report = summarize(rows, samples, args, start, end, wall)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / args.name
    stem.with_suffix(".json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    plot(report, rows, stem.with_suffix(".png"))
    write_md(report, stem.with_suffix(".md"))
    print(stem.with_suffix(".md").read_text(encoding="utf-8"))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
