"""Keyword leg: Okapi BM25 over jieba tokens, persisted as JSON next to the vectors.

English terms inside Chinese text survive tokenization as lower-cased words, so "Dropout" in a
question matches "dropout" in a passage. A small bilingual glossary expands queries across the
two languages (users type "BN", notes say "Batch Normalization" or "批归一化").
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

FORMAT = "bm25-jieba-v1"
K1 = 1.2
B = 0.75

_STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 吗 呢 吧 啊 么 这 那 其 之 也 都 就 而 并 把 被 对 于 为 以 中 上 下 个 一 有 我 你 他 它 们 "
    "我们 你们 什么 怎么 怎样 如何 哪些 一下 一些 可以 这个 那个 这些 那些 进行 时候 应该 需要 通常 "
    "a an the of to in on for is are be what how why which does do with and or".split()
)

# Equivalent terms; every member expands to all others at query time.
GLOSSARY: tuple[tuple[str, ...], ...] = (
    ("bn", "batch normalization", "batchnorm", "批归一化", "批量归一化", "批标准化"),
    ("ln", "layer normalization", "layernorm", "层归一化"),
    ("lr", "learning rate", "学习率"),
    ("sgd", "随机梯度下降", "stochastic gradient descent"),
    ("gd", "梯度下降", "gradient descent"),
    ("gan", "gans", "生成对抗网络", "对抗生成网络"),
    ("rnn", "循环神经网络", "recurrent neural network"),
    ("cnn", "卷积神经网络", "convolutional neural network"),
    ("dnn", "深度神经网络", "全连接网络"),
    ("lstm", "长短期记忆"),
    ("bp", "反向传播", "back propagation", "backpropagation", "back-propagation"),
    ("dropout", "随机失活", "丢弃法"),
    ("relu", "线性整流"),
    ("sigmoid", "s型函数"),
    ("overfitting", "过拟合", "overfit"),
    ("underfitting", "欠拟合"),
    ("regularization", "正则化"),
    ("normalization", "归一化", "标准化"),
    ("activation function", "激活函数"),
    ("vanishing gradient", "梯度消失"),
    ("exploding gradient", "梯度爆炸"),
    ("loss function", "损失函数"),
    ("receptive field", "感受野"),
    ("pooling", "池化"),
    ("dilated convolution", "atrous convolution", "空洞卷积", "膨胀卷积"),
    ("depthwise separable convolution", "深度可分离卷积"),
    ("data augmentation", "数据增强", "数据扩增"),
    ("transfer learning", "迁移学习"),
    ("hyperparameter", "hyperparameters", "超参数"),
    ("attention", "注意力"),
    ("optimizer", "优化器", "优化算法"),
    ("imbalanced data", "数据不平衡", "不平衡数据", "类别不平衡"),
    ("weight initialization", "权重初始化", "初始化"),
    ("flops", "计算量"),
    ("upsampling", "上采样"),
    ("downsampling", "下采样"),
    ("epoch", "轮次"),
    ("multi-task learning", "多任务学习"),
    ("end-to-end learning", "端到端学习"),
)


def _is_term(tok: str) -> bool:
    if not tok or tok in _STOPWORDS:
        return False
    return any(unicodedata.category(c)[0] in "LN" for c in tok)


def tokenize(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)
    text = unicodedata.normalize("NFKC", text).lower()
    return [t for t in (w.strip() for w in jieba.cut_for_search(text)) if _is_term(t)]


def _glossary_index() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for group in GLOSSARY:
        for term in group:
            index.setdefault(term, []).extend(t for t in group if t != term)
    return index


_GLOSSARY = _glossary_index()
_LATIN_TERM = re.compile(r"[a-z][a-z\-]*(?: [a-z][a-z\-]*)*")


def expand_query(text: str) -> str:
    """Append glossary equivalents of terms found in the query."""
    low = unicodedata.normalize("NFKC", text).lower()
    extra: list[str] = []
    for term, others in _GLOSSARY.items():
        if term.isascii():
            if re.search(rf"(?<![a-z]){re.escape(term)}(?![a-z])", low):
                extra.extend(others)
        elif term in low:
            extra.extend(others)
    return text if not extra else text + " " + " ".join(dict.fromkeys(extra))


@dataclass
class LexicalHit:
    row: int
    score: float
    coverage: float  # share of the query's IDF mass that this document matches


class BM25:
    """Okapi BM25. Stores per-document term counts; postings and IDF are derived on load."""

    def __init__(self, doc_terms: list[dict[str, int]]):
        self.doc_terms = doc_terms
        self.doc_len = [sum(d.values()) for d in doc_terms]
        self.avgdl = (sum(self.doc_len) / len(self.doc_len)) if self.doc_len else 0.0
        df: Counter[str] = Counter()
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for row, terms in enumerate(doc_terms):
            for term, tf in terms.items():
                df[term] += 1
                self.postings.setdefault(term, []).append((row, tf))
        n = len(doc_terms)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "BM25":
        return cls([dict(Counter(tokenize(t))) for t in texts])

    def __len__(self) -> int:
        return len(self.doc_terms)

    def search(self, query: str, k: int = 10, expand: bool = True) -> list[LexicalHit]:
        base = set(tokenize(query))
        terms = base | (set(tokenize(expand_query(query))) - base if expand else set())
        # Expansion terms count half: they widen recall without outvoting the user's words.
        weight = {t: (1.0 if t in base else 0.5) for t in terms}
        scores: dict[int, float] = {}
        matched: dict[int, float] = {}
        for term in terms:
            idf = self.idf.get(term)
            if idf is None:
                continue
            for row, tf in self.postings[term]:
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * self.doc_len[row] / (self.avgdl or 1)))
                scores[row] = scores.get(row, 0.0) + weight[term] * idf * norm
                if term in base:
                    matched[row] = matched.get(row, 0.0) + idf
        # Unknown query terms get the largest IDF: a word the corpus never uses is strong evidence
        # that the corpus does not cover the question.
        unseen_idf = math.log(1 + (len(self) + 0.5) / 0.5) if len(self) else 1.0
        total = sum(self.idf.get(t, unseen_idf) for t in base) or 1.0
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
        return [LexicalHit(row, s, matched.get(row, 0.0) / total) for row, s in top]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"format": FORMAT, "k1": K1, "b": B, "docs": self.doc_terms}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "BM25":
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown BM25 format {data.get('format')!r}")
        return cls(data["docs"])
