"""<out>/scale.md and scale.png of `rag bench scale`: the table per corpus size, the targets at the largest
size measured, build stages, incremental adds, the one-leg runs, and latency/memory against size."""

from __future__ import annotations

from pathlib import Path

from .report import figure, meets, save_figure
from .scale_phases import N_QUERIES

TARGETS = {"fused_p50_ms": 50, "fused_p95_ms": 150, "load_s": 2.0, "keyword_rss_mb": 1024, "add_file_s": 5.0}
ONE_LEG_KEYS = ("one_leg", "one_leg_jieba", "one_leg_bigram")  # results of `python -m rag.bench.scale_phases one_leg`


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _mark(value, target) -> str:
    """✅ / ❌ against an upper bound; — when not measured."""
    ok = meets(value, target, higher=False)
    return "—" if ok is None else "✅" if ok else "❌"


def _kw_add(a: dict):
    return _get(a, "add", "stages_s", "keywords") if "add" in a else _get(a, "keyword_store_only", "add_s")


def render(report: dict) -> str:
    m = report["machine"]
    sizes = sorted(report["sizes"].items(), key=lambda kv: kv[1]["n_target"])
    lines = [f"# Retrieval at scale: {', '.join(label for label, _ in sizes)} chunks", "",
             f"{m['date']}, {m['cpus']} CPU cores (shared; load average at start {m['load_start']}), embedder "
             f"`{m['embedder']}`. Produced by `nice -n 15 rag bench scale` (rag/bench/scale.py): synthetic Chinese "
             "corpora made of the seed notes' sentences recombined into Q&A units of 100 per file, indexed by the "
             "real `rag index` path; every phase in a fresh process. Queries: the retrieval eval set's questions "
             f"({N_QUERIES}, k = 5 fused from 30 per leg). Latencies in ms.", "",
             "| chunks | build | keyword load | keyword RSS | index load | index RSS | jieba p50/p95 | bigram p50/p95 | "
             "dense p50/p95 (incl. embedding) | **fused p50/p95** | add 1 file: keyword store / whole `rag index` | "
             "disk: keyword / vectors / chunks |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_size_row(r) for _, r in sizes if r.get("build")]  # the others were not built in full (one-leg table)
    lines += _targets(sizes) + _build_stages(sizes) + _incremental(sizes) + _one_leg(sizes)
    lines += ["", "## Reading it", ""] + report.get("notes", []) + [""]
    return "\n".join(lines)


def _size_row(r: dict) -> str:
    b, k, s, a = r.get("build", {}), r.get("keyword", {}), r.get("serve", {}), r.get("add", {})

    def lat(d, leg):
        return f"{_get(d, 'latency_ms', leg, 'p50')} / {_get(d, 'latency_ms', leg, 'p95')}" if _get(d, "latency_ms", leg) else "—"

    dense = "—"
    if _get(s, "latency_ms", "dense"):
        dense = (f"{round(s['latency_ms']['dense']['p50'] + s['latency_ms']['embed']['p50'], 2)} / "
                 f"{round(s['latency_ms']['dense']['p95'] + s['latency_ms']['embed']['p95'], 2)}")
    disk = s.get("disk_mb", {})
    return (f"| {b.get('chunks', r['n_target']):,} | {b.get('build_s', '—')} s | {k.get('keyword_load_s', '—')} s | "
            f"{k.get('keyword_rss_mb_after_queries', '—')} MB | {s.get('load_s', '—')} s | "
            f"{s.get('rss_mb_index_after_queries', '—')} MB | {lat(k, 'jieba')} | {lat(k, 'bigram')} | {dense} | "
            f"**{lat(s, 'fused')}** | {_kw_add(a)} s / {_get(a, 'add', 'total_s') or '—'} s | "
            f"{disk.get('keyword store', '—')} / {disk.get('vector index', '—')} / "
            f"{disk.get('chunks.sqlite (text + fp32 vectors)', '—')} MB |")


def _targets(sizes: list) -> list[str]:
    measured = [(label, r) for label, r in sizes if r.get("serve")] or sizes
    big_label, big = measured[-1]
    s, k, a = big.get("serve", {}), big.get("keyword", {}), big.get("add", {})
    checks = [("fused p50", _get(s, "latency_ms", "fused", "p50"), TARGETS["fused_p50_ms"], "ms"),
              ("fused p95", _get(s, "latency_ms", "fused", "p95"), TARGETS["fused_p95_ms"], "ms"),
              ("index load", s.get("load_s"), TARGETS["load_s"], "s"),
              ("keyword-leg RSS", k.get("keyword_rss_mb_after_queries"), TARGETS["keyword_rss_mb"], "MB"),
              ("add one file (keyword store)", _kw_add(a), TARGETS["add_file_s"], "s"),
              ("add one file (whole `rag index`)", _get(a, "add", "total_s"), TARGETS["add_file_s"], "s")]
    checks += [(f"add one file at {label} (whole `rag index`, assembled stores)", _get(r, "add_at_scale", "add", "total_s"),
                TARGETS["add_file_s"], "s") for label, r in sizes if r.get("add_at_scale")]
    lines = ["", f"## Targets at {big_label}", "", "| what | measured | target | |", "|---|---|---|---|"]
    return lines + [f"| {w} | {v if v is not None else '—'} {u} | ≤ {t} {u} | {_mark(v, t)} |" for w, v, t, u in checks]


def _build_stages(sizes: list) -> list[str]:
    lines = ["", "## Build stages (seconds)", "", "| chunks | read+chunk | embed | chunk store | keyword store | vector "
             "index | generation | vector index kind | peak RSS of the build |", "|---|---|---|---|---|---|---|---|---|"]
    for label, r in sizes:
        if not r.get("build"):
            continue
        st = _get(r, "build", "build_stages_s") or {}
        lines.append(f"| {label} | {st.get('read', '—')} | {st.get('embed', '—')} | {st.get('chunk_store', '—')} | "
                     f"{st.get('keywords', '—')} | {st.get('vectors', '—')} | {st.get('write', '—')} | "
                     f"`{_get(r, 'serve', 'vector_index') or '—'}` | {_get(r, 'build', 'peak_rss_mb')} MB |")
    return lines


def _total(d: dict | None) -> str:
    d = d or {}
    if d.get("total_s") is None:
        return "—"
    extra = ", ".join(x for x in (f"CPU {d['cpu_s']} s" if "cpu_s" in d else "",
                                   f"load {d['load_avg']}" if "load_avg" in d else "") if x)
    return f"**{d['total_s']} s**" + (f" ({extra})" if extra else "")


def _stages(d: dict | None) -> str:
    st = (d or {}).get("stages_s", {})
    return " / ".join(str(st.get(k, "—")) for k in ("read", "embed", "chunk_store", "keywords", "vectors", "write"))


def _incremental(sizes: list) -> list[str]:
    lines = ["", "## Incremental `rag index` (one file of 100 chunks added, changed, deleted)", "",
             "Wall time (CPU time of the process, load average). Stages: read+chunk / embed / chunk store / keyword "
             "store / vectors / generation, seconds; read includes checking every source file (stat, and a hash "
             "when its size or mtime changed) and, in the first step of a process, importing the text splitter; "
             "the keyword store stage includes loading jieba's dictionary there.", "",
             "| chunks | run | add: total | add: stages | change: total | delete: total | delete: stages | vector segments after |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in sizes:
        a = r.get("add", {})
        if a and "add" in a:
            segs = ", ".join(_get(a, "delete", "vector_segments") or []) or "—"
            lines.append(f"| {label} | shared stores ({r.get('add_run', 'this run')}) | {_total(a.get('add'))} | "
                         f"{_stages(a.get('add'))} | {_total(a.get('change'))} | "
                         f"{_total(a.get('delete'))} | {_stages(a.get('delete'))} | {segs} |")
        old = r.get("add_previous")
        if old and "add" in old:
            st, dst = old["add"].get("stages_s", {}), old["delete"].get("stages_s", {})
            lines.append(f"| {label} | per-generation rewrite ({old.get('run', 'earlier run')}) | {_get(old, 'add', 'total_s')} s | "
                         f"{st.get('read', '—')} / {st.get('embed', '—')} / rewrite of chunk store + vector index "
                         f"{st.get('write', '—')} / keyword {st.get('keywords', '—')} | — | {_get(old, 'delete', 'total_s')} s | "
                         f"keyword {dst.get('keywords', '—')} / rewrite {dst.get('write', '—')} | — |")
        elif old and "keyword_store_only" in old:
            lines.append(f"| {label} | keyword store only ({old.get('run', 'earlier run')}) | — | keyword {_kw_add(old)} s | — | — | "
                         f"keyword {_get(old, 'keyword_store_only', 'delete_s')} s | — |")
    scaled = [(label, r["add_at_scale"]) for label, r in sizes if r.get("add_at_scale")]
    if scaled:
        lines += ["", "### Against stores assembled at that size (`RAG_SCALE_PHASES=add_at_scale rag bench scale`)", "",
                  "Real corpus files, chunk store, vector base and generation; the keyword store has no documents for "
                  "the assembled rows (its add at 1M: the one-leg table below).", "",
                  "| rows | vector base | chunk store on disk | add: total | add: stages | change: total | delete: total | "
                  "delete: stages | vector segments after |", "|---|---|---|---|---|---|---|---|---|"]
        for label, a in scaled:
            lines.append(f"| {a['rows']:,} | `{a['vector_index']}` | {a['store_mb']} MB | {_total(a.get('add'))} | "
                         f"{_stages(a.get('add'))} | {_total(a.get('change'))} | {_total(a.get('delete'))} | "
                         f"{_stages(a.get('delete'))} | {', '.join(_get(a, 'delete', 'vector_segments') or [])} |")
    return lines


def _one_leg(sizes: list) -> list[str]:
    one = [r[key] for _, r in sizes for key in ONE_LEG_KEYS if r.get(key)]
    if not one:
        return []
    lines = ["", "## The keyword store alone, one leg (`python -m rag.bench.scale_phases one_leg`)", "",
             "| documents | leg | build | load | RSS after queries | p50 / p95 ms | add 1 file (100 chunks) | disk |",
             "|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {o['documents']:,} | {o['leg']} | {o['build_s']} s | {o['load_s']} s | {o['rss_mb_after_queries']} MB | "
                    f"{o['latency_ms']['p50']} / {o['latency_ms']['p95']} | {o['add_file_s']} s | {o['disk_mb']} MB |"
                    for o in one]


def plot(report: dict, path: Path) -> None:
    """Latency, memory/disk and the time to add one file against corpus size, log-log."""
    import numpy as np

    sizes = sorted(report["sizes"].values(), key=lambda r: r["n_target"])
    n = [_get(r, "build", "chunks") or r["n_target"] for r in sizes]
    fig, axes = figure(3, (16, 4.2))
    ax1, ax2, ax3 = axes[0]
    for key, label, src in (("fused", "fused (hybrid, k=5)", "serve"), ("jieba", "jieba-word BM25", "keyword"),
                            ("bigram", "bigram BM25", "keyword"), ("dense", "dense search (no embedding)", "serve")):
        for q, style in (("p50", "-o"), ("p95", ":x")):
            ys = [_get(r, src, "latency_ms", key, q) for r in sizes]
            if any(y is not None for y in ys):
                ax1.plot(n, [y if y is not None else np.nan for y in ys], style, label=f"{label} {q}")
    for leg, style in (("jieba", "^"), ("bigram", "v")):  # the one-leg runs (keyword store alone)
        pts = [(r["one_leg"]["documents"], r["one_leg"]["latency_ms"]) for r in sizes
               if _get(r, "one_leg", "leg") == leg] + [(r["one_leg_" + leg]["documents"], r["one_leg_" + leg]["latency_ms"])
                                                      for r in sizes if r.get("one_leg_" + leg)]
        for x, l in pts:
            ax1.plot([x], [l["p50"]], style, color="black", label=f"{leg} leg alone p50")
            ax1.plot([x], [l["p95"]], style, color="grey", label=f"{leg} leg alone p95")
    ax1.axhline(TARGETS["fused_p50_ms"], color="grey", lw=0.8, ls="--")
    ax1.set(xlabel="chunks", ylabel="ms per query", title="query latency")
    ax1.legend(fontsize=7)
    for key, label, src in (("keyword_rss_mb_after_queries", "keyword legs RSS", "keyword"),
                            ("rss_mb_index_after_queries", "whole index RSS", "serve")):
        ax2.plot(n, [_get(r, src, key) or np.nan for r in sizes], "-o", label=label)
    for key, label in (("keyword store", "keyword store on disk"), ("vector index", "vector index on disk")):
        ax2.plot(n, [_get(r, "serve", "disk_mb", key) or np.nan for r in sizes], "--s", label=label)
    for r in sizes:
        for key in ONE_LEG_KEYS:
            o = r.get(key)
            if o:
                ax2.plot([o["documents"]], [o["rss_mb_after_queries"]], "^", label=f"{o['leg']} leg alone RSS")
                ax2.plot([o["documents"]], [o["disk_mb"]], "s", mfc="none", label=f"{o['leg']} leg alone on disk")
    ax2.axhline(TARGETS["keyword_rss_mb"], color="grey", lw=0.8, ls="--")
    ax2.set(xlabel="chunks", ylabel="MB", title="memory and disk")
    ax2.legend(fontsize=7)
    for keys, style, label in ((("add_previous", "add", "total_s"), "-x", "per-generation rewrite (earlier run)"),
                               (("add", "add", "total_s"), "-o", "shared stores, wall"),
                               (("add", "add", "cpu_s"), ":o", "shared stores, CPU"),
                               (("add_at_scale", "add", "total_s"), "s", "shared stores, assembled stores, wall"),
                               (("add_at_scale", "add", "cpu_s"), "D", "shared stores, assembled stores, CPU")):
        pts = [(x, _get(r, *keys)) for x, r in zip(n, sizes) if _get(r, *keys)]
        if keys[0] == "add_at_scale":
            pts = [(r["add_at_scale"]["rows"], _get(r, *keys)) for r in sizes if _get(r, *keys)]
        if pts:
            ax3.plot(*zip(*pts), style, label=label)
    ax3.axhline(TARGETS["add_file_s"], color="grey", lw=0.8, ls="--")
    ax3.set(xlabel="chunks", ylabel="s", title="`rag index` after adding one file")
    for ax in (ax1, ax2, ax3):  # log-log where there is data (a run of one phase may leave a panel empty)
        data = [line for line in ax.lines if not line.get_label().startswith("_")]  # (not the target lines)
        if any(np.nanmax(np.asarray(line.get_ydata(), float), initial=0) > 0 for line in data):
            ax.set(xscale="log", yscale="log")
    ax3.legend(fontsize=7)
    save_figure(fig, path)
