"""`rag eval mcq`'s scoring pass with the real 1.5B model on two items (slow): every signal is scored,
the order-free ones do not depend on the order, and the notes move the reader toward their answer."""

from __future__ import annotations

import math

import pytest

from conftest import write_sample_corpus
from rag.assistant import Assistant
from rag.config import Settings
from rag.evaluation import mcq, mcq_rules
from rag.evaluation.cache import ScoreCache

pytestmark = pytest.mark.slow

ITEMS = [
    {"id": 1, "question": "测试的时候要用 Dropout 吗?", "options": ["需要，测试时也随机丢弃神经元", "不需要，测试时关闭 Dropout"],
     "answer": [1], "explanation": "", "derived_from": "explanation"},
    {"id": 2, "question": "关于学习率，下列说法错误的是", "options": ["学习率过大时损失会震荡甚至发散", "学习率过小时收敛很慢",
                                                       "学习率越大模型收敛越稳定"], "answer": [2], "explanation": "",
     "derived_from": "explanation"},
]


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcqreal")
    s = Settings.from_env(corpus_dir=write_sample_corpus(tmp / "corpus"), index_dir=tmp / "index", threads=2)
    a = Assistant.from_settings(s)
    a.build()
    return a


def test_real_model_scores_every_signal_and_the_evidence_moves_the_reader(assistant):
    r = mcq.run(assistant, ITEMS, ScoreCache(None))
    first, second = r["items"]
    assert second["negated"] and second["stem"] == "关于学习率，下列说法正确的是"
    for row in r["items"]:
        n = row["n_options"]
        for cond in ("rag", "closed"):
            s = row["signals"][cond]
            assert len(s["text"]) == len(s["judge"]) == n and all(math.isfinite(x) for x in s["text"] + s["judge"])
            assert len(s["letter"]["rotations"]) == n
            # renormalised over the n letters: each rotation's probabilities sum to 1
            for rot in s["letter"]["rotations"]:
                assert sum(math.exp(x) for x in rot) == pytest.approx(1.0, abs=1e-6)
        assert "Dropout" in first["evidence"] or "学习率" in row["evidence"]
    # the order-free rules give the same answer whatever the order the options came in
    for rule in ("judge", "letter-rot", mcq_rules.HEADLINE_RULE):
        assert r["variants"][f"rag/original/{rule}"] == r["variants"][f"rag/shuffled/{rule}"]
    # the notes say Dropout is off at test time: with them, the reader raises that option over the other
    lift = [a - b for a, b in zip(first["signals"]["rag"]["judge"], first["signals"]["closed"]["judge"])]
    lift_letters = mcq_rules.raw_signals(first, "rag", "original")["letter-rot-lift"]
    assert lift[1] - lift[0] > 0 or lift_letters[1] > lift_letters[0]
    assert first["pred"]["rag/original"] == [1]
