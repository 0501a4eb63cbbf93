"""Should the LLM rewrite questions before retrieval, and how (eval/results/translation.md)?

Two rewrites by the local generator, each searched four ways, on the tuning sets' answerable
non-heading questions:
  keywords     every question rewritten into a line of the notes' Chinese terms (KEYWORD_* below;
               the issue's "rewrite into the notes' vocabulary"): not shipped
  translation  English and mixed questions translated into Chinese (rag.prompts.TRANSLATE_*; shipped as
               rag.translate for questions whose letters are at least 30% Latin)
Ways: `question` (as asked, = main), `+ rewrite` (question and rewrite as one query: shipped),
`rewrite only`, `rrf w` (the two rankings fused by reciprocal rank, the rewrite's weight w).
    python eval/compare_translation.py --index-dir index [--set SET ...] [--json OUT]
Replies are cached in --cache (default: a file next to the index) by prompt and question.
Choose on tuning sets only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag import prompts  # noqa: E402
from rag.assistant import Assistant  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation.data import covered_of, first_gold_rank, golds_of, load_jsonl  # noqa: E402
from rag.evaluation.metrics import hit_at, mrr_at  # noqa: E402
from rag.translate import is_english, parse, search_text  # noqa: E402

SETS = ("eval/retrieval.jsonl", "eval/retrieval_heldout.jsonl", "eval/answers_tune.jsonl")
KEYWORD_SYSTEM = (
    "你是深度学习面试笔记的检索助手。笔记是中文的，常用术语如：梯度消失、梯度爆炸、过拟合、正则化、激活函数、"
    "反向传播、卷积、池化、感受野、批归一化、学习率、损失函数。把学生的问题改写成笔记里会出现的中文术语和关键词，"
    "英文问题要译成中文术语（保留英文缩写）。只输出一行关键词，用空格分隔，不要解释。")
KEYWORD_SHOTS = (("模型在训练集上表现很好，换到新数据就不行了，怎么办？", "过拟合 泛化 正则化 dropout 数据增强 提前停止"),
                 ("Why do people shuffle the training data every epoch?", "打乱 训练数据 epoch 随机梯度下降 SGD 样本顺序"))
KEYWORD_PREFIX = "关键词："
WAYS = ("question", "+ rewrite", "rewrite only", "rrf 0.25", "rrf 0.5", "rrf 1.0")


def keyword_messages(q: str) -> list[dict]:
    m = [{"role": "system", "content": KEYWORD_SYSTEM}]
    for a, b in KEYWORD_SHOTS:
        m += [{"role": "user", "content": a}, {"role": "assistant", "content": KEYWORD_PREFIX + b}]
    return m + [{"role": "user", "content": q}]


REWRITES = {  # name -> (messages, assistant prefix, which questions)
    "keywords": (keyword_messages, KEYWORD_PREFIX, lambda it: True),
    "translation": (prompts.translation_messages, "",
                    lambda it: is_english(it["question"]) or it.get("lang") in ("en", "mixed")),
}


def _key(name: str, q: str) -> str:
    messages, prefix, _ = REWRITES[name]
    return hashlib.sha1(json.dumps([messages(q), prefix], ensure_ascii=False).encode()).hexdigest()


def _rrf(lists, weights, k=10):
    score, hit = {}, {}
    for hits, w in zip(lists, weights):
        for i, h in enumerate(hits):
            score[h.chunk.id] = score.get(h.chunk.id, 0.0) + w / (k + i + 1)
            hit[h.chunk.id] = h
    return [hit[c] for c in sorted(score, key=lambda c: -score[c])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path, default=None)
    ap.add_argument("--set", action="append", dest="sets")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    a = Assistant.from_settings(Settings.from_env(index_dir=args.index_dir))
    r = a.retriever()
    cache_path = args.cache or a.settings.index_dir / "rewrites-cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    out: dict = {"meta": {"model": a.settings.generator, "sets": args.sets or list(SETS)}, "tables": {}, "rows": []}
    for set_path in args.sets or SETS:
        items = [it for it in load_jsonl(Path(set_path)) if covered_of(it) and it.get("kind") != "heading"]
        for name, (messages, prefix, wanted) in REWRITES.items():
            chosen = [it for it in items if wanted(it)]
            ranks: dict[str, dict[str, list]] = {}
            seconds = []
            for it in chosen:
                q, golds = it["question"], golds_of(it)
                key = _key(name, q)
                if key not in cache:
                    t = time.perf_counter()
                    raw = "".join(a.generator.stream(messages(q), max_tokens=64, prefix=prefix))
                    seconds.append(time.perf_counter() - t)
                    cache[key] = raw
                    cache_path.write_text(json.dumps(cache, ensure_ascii=False))
                rw = parse(cache[key]) if name == "translation" else (cache[key].strip().splitlines() or [""])[0]
                base = r.search(q, 30).hits
                joint = r.search(search_text(q, rw), 30).hits if rw else base
                only = r.search(rw, 30).hits if rw else base
                got = {"question": base, "+ rewrite": joint, "rewrite only": only,
                       **{f"rrf {w}": _rrf([base, only], [1.0, w]) for w in (0.25, 0.5, 1.0)}}
                # the set's label; "zh*": labelled zh, but Latin-heavy enough for rag.translate to translate it
                lang = it.get("lang", "zh") + ("*" if it.get("lang") == "zh" and is_english(q) else "")
                row = {"set": set_path, "rewrite": name, "id": it["id"], "lang": lang, "question": q, "text": rw}
                for way, hits in got.items():
                    rank = first_gold_rank([h.chunk for h in hits[:10]], golds)
                    row[way] = rank
                    for group in ("all", lang):
                        ranks.setdefault(group, {}).setdefault(way, []).append(rank)
                out["rows"].append(row)
            for group, by_way in ranks.items():
                out["tables"][f"{set_path}|{name}|{group}"] = {
                    way: {"n": len(rs), "hit@1": hit_at(rs, 1), "hit@5": hit_at(rs, 5), "mrr@5": mrr_at(rs, 5)}
                    for way, rs in by_way.items()}
            if seconds:
                print(f"{set_path} {name}: {len(seconds)} new replies, {sum(seconds) / len(seconds):.2f} s each")
    for key, table in out["tables"].items():
        print(f"\n{key}")
        for way in WAYS:
            t = table[way]
            print(f"  {way:13s} n {t['n']:3d}  hit@1 {t['hit@1']:.3f}  hit@5 {t['hit@5']:.3f}  MRR@5 {t['mrr@5']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
