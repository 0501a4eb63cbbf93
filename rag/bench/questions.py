"""The texts the benchmarks ask: fixed RAG questions, the retrieval eval set's questions, one MCQ item.

Read leniently from the repository's eval/ sets: a benchmark should still run (on the built-in
questions) from an installed package without them.
"""

from __future__ import annotations

import json
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"

QUESTIONS = [  # first two: the measured RAG prompts; the rest: extra texts for the prompt-lookup check
    "Batch Normalization 为什么能加快训练收敛？",
    "测试的时候要用 Dropout 吗？",
    "梯度消失和梯度爆炸的原因是什么，怎么解决？",
    "如何理解反向传播？",
    "对于分类问题，精度指标是否完全可靠？",
    "L1 和 L2 正则化有什么区别？",
    "为什么要做数据归一化？",
    "什么是过拟合，如何缓解？",
]


def retrieval_queries(n: int) -> list[str]:
    """n questions of eval/retrieval.jsonl, cycled (QUESTIONS when the set is not there)."""
    out = []
    try:
        for line in (EVAL_DIR / "retrieval.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line)["question"])
    except (OSError, ValueError, KeyError):
        pass
    out = out or QUESTIONS
    return [out[i % len(out)] for i in range(n)]


def mcq_item() -> dict:
    """The first usable multiple-choice item of eval/mcq.jsonl (a built-in one when the set is not there)."""
    try:
        for line in (EVAL_DIR / "mcq.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if not r.get("excluded") and len(r.get("options", [])) >= 4:
                return r
    except (OSError, ValueError):
        pass
    return {"question": "测试的时候要用 Dropout 吗？", "options": ["需要，和训练时一样", "不需要，测试时关闭 Dropout",
                                                           "只在最后一层使用", "取决于学习率"], "answer": [1]}
