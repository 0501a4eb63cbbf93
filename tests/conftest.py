import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent

SAMPLE_MD = """# 面试题

导读：一些常见问题。

1. 介绍 Batch Normalization 的意义
Batch Normalization 把每层的输出归一化为均值 0、方差 1，可以加快收敛，也有一定正则化作用。

2. 测试的时候要用 Dropout 吗?
不需要。Dropout 只在训练过程中随机丢弃神经元，测试时关闭 Dropout，使用完整网络。

3. 学习率太大会怎样?
学习率过大时损失会震荡甚至发散，模型无法收敛；过小时收敛很慢。
"""

SAMPLE_TXT = """点击上方“小白学视觉”,选择加"星标"或“置顶”
重磅干货,第一时间送达
(1)梯度消失
梯度消失是因为激活函数在饱和区导数很小，反向传播时连乘导致梯度趋近于零。
5fc82326ada502a796a09e8997015c7a.png
(2)梯度爆炸
梯度爆炸可以用梯度裁剪（gradient clipping）和合适的权重初始化来缓解。
红包个数最小为10个
"""


def write_sample_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.md").write_text(SAMPLE_MD, encoding="utf-8")
    (d / "grad.txt").write_text(SAMPLE_TXT, encoding="utf-8")
    return d


def pick_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free local port (module-scoped app fixtures call it too)."""
    return pick_free_port


@pytest.fixture(scope="session")
def sample_corpus():
    """A function writing the two sample notes into a directory (for module-scoped fixtures)."""
    return write_sample_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_sample_corpus(tmp_path / "corpus")


@pytest.fixture
def settings(tmp_path, corpus):
    from rag.config import Settings

    return Settings(corpus_dir=corpus, index_dir=tmp_path / "index", cache_dir=tmp_path / "cache",
                    embedder="fake", generator="fake")


@pytest.fixture
def assistant(settings):
    from rag.assistant import Assistant

    a = Assistant.from_settings(settings)  # "fake" specs: rag.fakes
    a.embedder, a.generator  # loaded now: tests read what the fakes recorded
    return a
