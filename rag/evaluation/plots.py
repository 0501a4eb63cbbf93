"""Plots of `rag eval` (matplotlib, imported only here): MCQ accuracy per category, hit@k per retriever."""

from __future__ import annotations

from pathlib import Path

from .retrieval import MAX_K, MODES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cjk_font() -> str | None:
    """A font with Chinese glyphs, if the system has one (else labels fall back to ASCII and item ids)."""
    from matplotlib import font_manager as fm

    for f in fm.fontManager.ttflist:
        if any(s in f.name for s in ("CJK SC", "WenQuanYi", "Droid Sans Fallback", "Source Han Sans")):
            return f.name
    # matplotlib's font cache may predate a font installed later
    files = [p for p in fm.findSystemFonts() if any(k in Path(p).name.lower() for k in ("cjk", "wqy", "fallback"))]
    for path in sorted(files, key=lambda p: ("Sans" not in p, p)):
        try:
            fm.fontManager.addfont(path)
            return fm.FontProperties(fname=path).get_name()
        except (OSError, RuntimeError, ValueError):
            continue
    return None


def plot_mcq(r: dict, path: Path) -> None:
    plt = _pyplot()
    font = _cjk_font()
    if font:
        plt.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
    cats = r["by_category"]
    names = list(cats)
    labels = [n if font else n.encode("ascii", "ignore").decode().strip() for n in names]
    labels = [f"{lab} Q{','.join(map(str, cats[n]['ids']))}" for lab, n in zip(labels, names)]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [cats[n]["rag"] for n in names], height=0.4, label="RAG")
    ax.barh([i - 0.2 for i in y], [cats[n]["closed"] for n in names], height=0.4, label="closed-book")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("exact-match accuracy")
    ax.set_title(f"MCQ accuracy by category (RAG {r['headline']['rag_original']:.0%}, "
                 f"closed-book {r['headline']['closed_original']:.0%})")
    ax.legend(loc="lower right")
    _save(plt, fig, path)


def plot_retrieval(r: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = list(range(1, MAX_K + 1))
    colors = dict(zip(MODES, ("tab:orange", "tab:green", "tab:blue")))
    for key, curve in r["curves"].items():
        mode, group = key.split("/")
        ax.plot(ks, curve, marker="o", color=colors[mode], linestyle="-" if group == "paraphrase" else "--",
                label=f"{mode} ({group})")
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"hit@k per retriever ({r['meta']['embedder']})")
    ax.legend(fontsize=8)
    _save(plt, fig, path)
