"""What every `rag bench` suite shares: percentiles, memory readings, the machine, sizes, report files
and Markdown/plot formatting. Suites measure; this module only reads clocks, counters and files."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RagError


@dataclass
class Outcome:
    """What a suite hands back: its data (also written to <out>/<name>.json) and lines for the terminal."""

    data: dict
    lines: list[str] = field(default_factory=list)


def logger(tag: str):
    """Progress lines on stderr, `[tag HH:MM:SS] message` (stdout stays for results)."""
    def log(msg: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    return log


_log = logger("bench")


# ---------------------------------------------------------------- statistics

def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100; numpy's default method)."""
    if not values:
        return float("nan")
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def nearest_rank(values: list, q: float):
    """The observed value at rank round(q * (n - 1)) (q in 0..1), Nones skipped; None if none is left.
    For a dozen questions a reported p50 that is one question's real time reads better than a mean of two."""
    xs = sorted(v for v in values if v is not None)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


def latency_ms(ms: list[float]) -> dict:
    """p50 / p95 / mean of latencies already in milliseconds, rounded to 0.01 ms."""
    return {"p50": round(float(percentile(ms, 50)), 2), "p95": round(float(percentile(ms, 95)), 2),
            "mean": round(sum(ms) / len(ms), 2)}


def rounded(x, nd: int = 2):
    return None if x is None else round(x, nd)


def meets(value, target, higher: bool) -> bool | None:
    """Whether a measurement meets its target (None: not measured)."""
    if value is None:
        return None
    return bool(value >= target) if higher else bool(value <= target)


# ---------------------------------------------------------------- memory

def rss_bytes() -> int:
    """Resident set size now (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    return rss_bytes() / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the machine

def machine_info(quick: bool) -> dict:
    from ..cpu import physical_cores

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    _log("measuring memory bandwidth (numpy copy)")
    return {"cpu": cpu, "cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M"),
            "bandwidth": memory_bandwidth(mb=128 if quick else 512)}


def memory_bandwidth(mb: int = 512, repeats: int = 5) -> dict:
    """STREAM-style copy bandwidth, (bytes read + bytes written) / s, with 1 and 2 threads (numpy
    releases the GIL in copyto). Best of `repeats`: other processes can only make it look slower."""
    import threading

    import numpy as np

    src = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(src)
    res = {}
    for n in (1, 2):
        parts = np.array_split(np.arange(len(src)), n)
        bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]
        best = 0.0
        for _ in range(repeats):
            threads = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            best = max(best, 2 * src.nbytes / (time.perf_counter() - t))
        res[f"copy_gbs_{n}t"] = round(best / 1e9, 1)
    return res


# ---------------------------------------------------------------- sizes

def parse_size(text: str) -> int:
    """'10k' -> 10000, '1m' -> 1000000, '2.5M' -> 2500000, '300' -> 300."""
    s = text.strip().lower()
    try:
        n = int(float(s.replace("k", "e3").replace("m", "e6")))
    except ValueError:
        raise RagError(f"'{text}' is not a size (give a number of vectors/chunks such as 2000, 10k or 1m)") from None
    if n <= 0:
        raise RagError(f"size '{text}' must be positive")
    return n


def parse_sizes(text: str | None) -> list[int] | None:
    """A comma-separated --sizes value; None when not given (or empty)."""
    sizes = [parse_size(s) for s in (text or "").split(",") if s.strip()]
    return sizes or None


def size_label(n: int) -> str:
    """10k, 100k, 1M; a size that is not a whole number of millions stays in thousands (1500k)."""
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k" if n >= 1000 else str(n)


# ---------------------------------------------------------------- report files and formatting

def earlier(path: Path) -> dict:
    """The report a previous run wrote (suites keep the sections they did not re-measure); {} if none.
    An unreadable one stops the run rather than being overwritten with less."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RagError(f"{path}: cannot read the earlier results ({e}); move the file away to start afresh") from None


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def fmt(x, unit: str = "", nd: int = 1) -> str:
    """A table cell: — for missing, yes/no for booleans, floats to `nd` decimals."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def figure(ncols: int, size: tuple[float, float]):
    """A row of matplotlib axes drawn off-screen (no display on a server); pass the figure to save_figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=size, squeeze=False)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
