"""Generators: decoding logic and the KV cache with fake models (fast), and the real 1.5B on both backends (slow)."""

import random

import pytest

from rag.generators.decoding import (
    accept_draft,
    common_prefix,
    greedy_decode,
    log_softmax_at,
    lookup_draft,
)
from rag.cpu import physical_cores

EOS = 0


class FakeModel:
    """Next token = a fixed function of the last two tokens; keeps the token context like llama.cpp's KV."""

    def __init__(self, prompt, vocab=12, seed=0):
        rng = random.Random(seed)
        self.table = {(a, b): rng.randrange(1, vocab) for a in range(vocab) for b in range(vocab)}
        self.table[(3, 4)] = EOS
        self.ctx = list(prompt)
        self.calls = 0

    def next(self, history):
        return self.table[(history[-2], history[-1])]

    def decode(self, tokens):
        self.calls += 1
        out = []
        for t in tokens:
            self.ctx.append(t)
            out.append(self.next(self.ctx))
        return out

    def drop(self, n):
        del self.ctx[len(self.ctx) - n:]


def run(prompt, max_tokens, propose=None, seed=0):
    m = FakeModel(prompt, seed=seed)
    stats = {}
    out = list(greedy_decode(prompt, m.next(prompt), m.decode, m.drop, lambda t: t == EOS, max_tokens, propose, stats))
    return out, m, stats


def test_accept_draft_keeps_the_agreeing_prefix():
    assert accept_draft([5, 6, 7], [5, 6, 9, 1]) == 2
    assert accept_draft([5, 6], [5, 6, 8]) == 2
    assert accept_draft([5], [4, 1]) == 0
    assert accept_draft([], [3]) == 0


def test_lookup_draft_continues_the_latest_earlier_ngram():
    assert lookup_draft([1, 2, 3, 4, 5, 9, 1, 2], n_draft=3) == [3, 4, 5]
    assert lookup_draft([7, 1, 2, 8, 1, 2, 6, 6, 1, 2], n_draft=2) == [6, 6]  # latest match wins
    assert lookup_draft([1, 2, 3], n_draft=3) == []  # no earlier occurrence of the tail
    assert lookup_draft([4], n_draft=3) == []
    assert lookup_draft([1, 2, 3, 1, 2], n_draft=10) == [3, 1, 2]  # stops at the end of the history


@pytest.mark.parametrize("seed", range(20))
def test_speculative_output_equals_plain_greedy(seed):
    rng = random.Random(seed)
    prompt = [rng.randrange(1, 12) for _ in range(30)]
    plain, _, plain_stats = run(prompt, 40, seed=seed)

    def noisy(history, n):  # right guesses, wrong guesses and end-of-sequence tokens mixed
        return [rng.choice([EOS, 1, 2, 3, 4, 5]) for _ in range(rng.randrange(0, n + 1))]

    for propose in (noisy, lambda h, n: lookup_draft(h, n_draft=n)):
        out, m, stats = run(prompt, 40, propose, seed=seed)
        assert out == plain
        assert stats["gen_tokens"] == len(out)
        # the context holds the prompt and every generated token that was fed back, nothing rejected
        assert m.ctx == (prompt + out)[:len(m.ctx)] and len(m.ctx) >= len(prompt) + len(out) - 1
    assert plain_stats["drafted"] == 0


def test_perfect_drafts_need_fewer_model_calls():
    prompt = [1, 2, 5, 7]
    plain, _, plain_stats = run(prompt, 30)
    oracle_model = FakeModel(prompt)

    def oracle(history, n):
        h, guess = list(history), []
        for _ in range(min(n, 4)):
            guess.append(oracle_model.next(h))
            h.append(guess[-1])
        return guess

    out, _, stats = run(prompt, 30, oracle)
    assert out == plain
    assert stats["accepted"] == stats["drafted"]
    assert stats["decode_calls"] < plain_stats["decode_calls"] / 3


def test_max_tokens_and_eos_stop_inside_a_draft():
    prompt = [9, 9, 3]
    m = FakeModel(prompt)
    m.table[(9, 3)] = 4  # then (3, 4) -> EOS
    out = list(greedy_decode(prompt, 4, m.decode, m.drop, lambda t: t == EOS, 10, lambda h, n: [EOS, 5][:n]))
    assert out == [4]
    for limit in (1, 2, 3):
        got, _, _ = run([1, 2, 5, 7], limit, lambda h, n: [1] * n)
        assert len(got) == limit


def test_common_prefix():
    assert common_prefix([1, 2, 3], (1, 2, 4)) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5, 6], [5, 6, 7]) == 2
    assert common_prefix("答案是巴黎", "答案是柏林") == 3  # strings too (rag bench compares texts)


def test_log_softmax_at():
    import math

    assert log_softmax_at([0.0, 0.0], 1) == pytest.approx(math.log(0.5))
    assert log_softmax_at([1000.0, 0.0], 0) == pytest.approx(0.0)


# ---------------------------------------------------------------- KV cache (fake llama.cpp context)


class FakeContext:
    """Stands in for LlamaContext: the keys/values are the tokens themselves; records every decode."""

    def __init__(self, n_ctx=64, fail_from=None, refuse_load=False):
        self.n_ctx = n_ctx
        self.kv = []
        self.calls = []  # (tokens, pos0, logits) of each decode
        self.fail_from = fail_from  # a decode reaching this position fails
        self.refuse_load = refuse_load

    def decode(self, tokens, pos0, logits):
        assert pos0 == len(self.kv)
        if self.fail_from is not None and pos0 + len(tokens) > self.fail_from:
            self.kv.extend(tokens[:1])  # llama.cpp may leave part of a failed batch behind
            return 1
        self.calls.append((list(tokens), pos0, logits))
        self.kv.extend(tokens)
        return 0

    def remove(self, pos0):
        del self.kv[pos0:]

    def logits(self, i):
        tokens, _, rows = self.calls[-1]
        i = i % len(tokens)
        assert rows == "all" or (rows == "last" and i == len(tokens) - 1), "row llama.cpp did not compute"
        return [float(tokens[i])]

    def save(self):
        return tuple(self.kv)

    def load(self, state):
        if self.refuse_load:
            return False
        self.kv = list(state)
        return True

    def decoded(self):
        return sum(len(t) for t, _, _ in self.calls)


def make_cache(**ctx_options):
    from rag.generators.kv_cache import KVCache

    ctx = FakeContext(**ctx_options)
    return KVCache(ctx, n_batch=4, snapshots=2, min_gain=2), ctx


def test_kv_prefill_reuses_the_common_prefix_and_redecodes_the_last_token():
    cache, ctx = make_cache()
    assert cache.prefill([1, 2, 3, 4, 5]) == 0
    assert cache.tokens == ctx.kv == [1, 2, 3, 4, 5] and cache.tokens_read == 5
    assert cache.logits(-1) == [5.0]
    assert cache.prefill([1, 2, 3, 9, 9, 9]) == 3
    assert cache.tokens == ctx.kv == [1, 2, 3, 9, 9, 9] and cache.tokens_read == 8
    n = ctx.decoded()
    assert cache.prefill([1, 2, 3, 9, 9, 9]) == 5  # the same prompt: only its last token again
    assert ctx.decoded() == n + 1 and cache.tokens_read == 9
    assert cache.logits(-1) == [9.0]


def test_kv_decode_batches_and_logits_rows():
    cache, ctx = make_cache()
    cache.decode(list(range(1, 11)), logits="last")
    assert [(len(t), p, rows) for t, p, rows in ctx.calls] == [(4, 0, "none"), (4, 4, "none"), (2, 8, "last")]
    cache.decode([11, 12, 13], logits="all")
    assert [cache.logits(i) for i in range(3)] == [[11.0], [12.0], [13.0]]
    cache.truncate(5)
    assert cache.tokens == ctx.kv == [1, 2, 3, 4, 5] and len(cache) == 5
    cache.truncate(9)  # longer than the cache: nothing to remove
    assert len(cache) == 5


def test_kv_failed_decode_leaves_cache_and_context_in_step():
    from rag.errors import GenerationError

    cache, ctx = make_cache(fail_from=6)
    with pytest.raises(GenerationError, match="llama_decode failed"):
        cache.decode([1, 2, 3, 4, 5, 6, 7])
    assert cache.tokens == ctx.kv == [1, 2, 3, 4]  # the first batch stays, the failed one is removed
    with pytest.raises(GenerationError, match="context holds 64"):
        cache.prefill(list(range(64)))


def test_kv_snapshot_brings_back_a_prompt_after_a_different_one():
    cache, ctx = make_cache()
    answer = [1, 2, 3, 4, 5, 6, 7, 8]
    cache.prefill(answer)
    cache.prefill([20, 21, 22])  # the rewrite prompt replaces the live context
    n = ctx.decoded()
    assert cache.prefill([1, 2, 3, 4, 5, 6, 30, 31]) == 6  # restored from the snapshot of `answer`
    assert ctx.decoded() == n + 2 and cache.tokens == ctx.kv == [1, 2, 3, 4, 5, 6, 30, 31]


def test_kv_snapshot_must_save_more_than_min_gain_tokens():
    from rag.generators.kv_cache import KVCache

    for min_gain, reused in ((2, 6), (1, 8)):
        cache = KVCache(FakeContext(), n_batch=4, snapshots=4, min_gain=min_gain)
        cache.prefill([1, 2, 3, 4, 5, 6, 7, 8])
        cache.prefill([1, 2, 3, 4, 5, 6, 50])
        # the snapshot shares 8 tokens, the live context 6: restoring gains 2
        assert cache.prefill([1, 2, 3, 4, 5, 6, 7, 8, 60]) == reused


def test_kv_snapshots_are_an_lru_without_superseded_prefixes():
    cache, _ = make_cache()
    cache.prefill([1, 2, 3])
    cache.prefill([1, 2, 3, 4, 5])  # extends [1, 2, 3], which goes
    assert list(cache.snapshots) == [(1, 2, 3, 4, 5)]
    cache.prefill([7, 8])
    cache.prefill([9, 9])
    assert list(cache.snapshots) == [(7, 8), (9, 9)]  # at most 2, the oldest dropped
    cache.clear()
    assert not cache.snapshots and not cache.tokens


def test_kv_refused_snapshot_is_dropped_and_the_prompt_recomputed():
    cache, ctx = make_cache(refuse_load=True)
    cache.prefill([1, 2, 3, 4, 5, 6, 7, 8])
    cache.prefill([20, 21])
    assert cache.prefill([1, 2, 3, 4, 5, 6, 9]) == 0
    assert cache.tokens == ctx.kv == [1, 2, 3, 4, 5, 6, 9]
    assert (1, 2, 3, 4, 5, 6, 7, 8) not in cache.snapshots


def test_physical_cores_is_positive():
    assert physical_cores() >= 1


def test_choose_threads_leaves_the_cores_other_processes_use():
    from rag.cpu import choose_threads

    assert choose_threads(2, None, 1) == 1  # no measurement: keep the current choice
    assert [choose_threads(2, x, 2) for x in (0.0, 0.4, 0.7, 1.2, 3.0)] == [2, 2, 1, 1, 1]
    assert choose_threads(8, 2.3, 8) == 6


def test_cpu_watch_reports_other_load(monkeypatch):
    import rag.cpu as g

    clock = {"t": 100.0, "busy": 50.0, "own": 1.0}
    monkeypatch.setattr(g.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(g.time, "sleep", lambda s: clock.update(t=clock["t"] + s))
    monkeypatch.setattr(g, "cpu_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(g, "own_cpu_seconds", lambda children=False: clock["own"])
    w = g.CpuWatch()
    clock.update(busy=50.2, own=1.1)
    assert w.others() == pytest.approx(0.4)  # first call waits out the 0.25 s window: (0.2 - 0.1) / 0.25
    clock.update(t=clock["t"] + 0.1)
    assert w.others() is None  # too short a window after that
    clock.update(t=clock["t"] + 1.9, busy=52.2, own=1.6)
    assert w.others() == pytest.approx((2.0 - 0.5) / 2.0)


# ---------------------------------------------------------------- real models (slow)

SPEC = "packaged:qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="module")
def llama():
    from rag.config import Settings
    from rag.generators import load_generator

    return load_generator(SPEC, Settings().cache_dir, backend="llama.cpp")


RAG_MESSAGES = [
    {"role": "system", "content": "你是深度学习面试助手。只根据下面给出的资料回答问题，不要使用资料以外的知识。"
                                  "先用一句话直接回答问题，再用一两句话解释原因。每句话末尾用方括号注明依据的资料编号。"},
    {"role": "user", "content": "资料:\n[1] Dropout 只在训练时随机丢弃神经元；测试时关闭 Dropout，使用完整的网络。\n\n"
                                "问题: 测试的时候要用 Dropout 吗？"},
]


@pytest.mark.slow
def test_llama_stream_produces_text_and_reuses_the_prompt_cache(llama):
    first = "".join(llama.stream(RAG_MESSAGES, max_tokens=24))
    assert len(first.strip()) >= 4
    assert llama.stats["gen_tokens"] > 0
    again = "".join(llama.stream(RAG_MESSAGES, max_tokens=24))
    assert llama.stats["cached_tokens"] == llama.stats["prompt_tokens"] - 1
    assert again.strip()


@pytest.mark.slow
def test_llama_snapshot_keeps_the_shared_prefix_across_a_different_prompt(llama):
    """Answer, then a rewrite prompt (different system prompt), then another answer: the second
    answer restores the first one's keys/values for the shared system prompt."""
    llama.clear_cache()
    list(llama.stream(RAG_MESSAGES, max_tokens=4))
    list(llama.stream([{"role": "system", "content": "把追问改写成独立的问题。"},
                       {"role": "user", "content": "那训练的时候呢？"}], max_tokens=4))
    follow = [RAG_MESSAGES[0], {"role": "user", "content": "资料:\n[1] 训练时 Dropout 随机丢弃神经元。\n\n问题: 训练时呢？"}]
    with_cache = "".join(llama.stream(follow, max_tokens=16))
    assert llama.stats["cached_tokens"] >= 40  # the system prompt, from the snapshot
    llama.clear_cache()
    assert "".join(llama.stream(follow, max_tokens=16)) == with_cache
    assert llama.stats["cached_tokens"] == 0


@pytest.mark.slow
def test_llama_prompt_lookup_gives_the_same_text(llama):
    plain = "".join(llama.stream(RAG_MESSAGES, max_tokens=40))
    llama.speculative = "prompt-lookup"
    try:
        fast = "".join(llama.stream(RAG_MESSAGES, max_tokens=40))
    finally:
        llama.speculative = "none"
    assert fast == plain


@pytest.mark.slow
def test_llama_score_ranks_the_right_continuation_first(llama):
    msgs = [{"role": "user", "content": "法国的首都是哪座城市？"}]
    (right, n_right), (wrong, _), (empty, n_empty) = llama.score(msgs, "答案: ", ["巴黎", "柏林", ""])
    assert right > wrong
    assert n_right >= 1 and (empty, n_empty) == (0.0, 0)
    # Scoring again hits the prompt cache, so the last prompt token is decoded alone: llama.cpp's
    # single-token kernels round differently from its batched ones (measured up to ~0.3 nats).
    assert llama.score(msgs, "答案: ", ["柏林"])[0][0] == pytest.approx(wrong, abs=0.5)


@pytest.mark.slow
def test_backends_agree_on_scores_and_first_greedy_tokens(llama):
    """The transformers path runs the dequantized Q4 weights in fp32; llama.cpp multiplies them with
    8-bit-quantized activations, so log-likelihoods differ slightly and greedy text may diverge late."""
    from rag.config import Settings
    from rag.generators import load_generator

    hf = load_generator(SPEC, Settings().cache_dir, backend="transformers")
    msgs = [{"role": "user", "content": "用一句话解释什么是过拟合。"}]
    opts = ["巴黎", "柏林", "东京是日本的首都"]
    q = [{"role": "user", "content": "法国的首都是哪里？"}]
    a, b = llama.score(q, "答案: ", opts), hf.score(q, "答案: ", opts)
    assert [n for _, n in a] == [n for _, n in b]
    for (x, _), (y, _) in zip(a, b):
        assert x == pytest.approx(y, abs=1.0)
    assert max(range(3), key=lambda i: a[i][0]) == max(range(3), key=lambda i: b[i][0])
    t_llama = "".join(llama.stream(msgs, max_tokens=12))
    t_hf = "".join(hf.stream(msgs, max_tokens=12))
    assert t_llama[:8] == t_hf[:8]
