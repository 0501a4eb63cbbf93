"""Per-chunk KV caches: the linking plan, the disk store, and KVCache filling a prompt from passage caches."""

from __future__ import annotations

import pytest

from rag.chunking import Chunk
from rag.evidence import passage_of
from rag.generators.chunk_kv import ChunkKVStore
from rag.generators.kv_cache import KVCache, PassageKV
from rag.generators.linking import Linked, Passage, plain, plan, runs


def tok(text: str, special: bool = True) -> list[int]:
    """One token per character (its code point): enough to follow every token to its place."""
    return [ord(c) for c in text]


def pieces_of(p: Passage) -> list[list[int]]:
    return [tok(x, False) for x in p.pieces]


# -- the plan


def test_plan_links_quoted_pieces_and_reads_the_rest():
    p = Passage(("什么是BN", "\n", "BN把输入归一化。", "它能加快收敛。"))
    prompt = "SYS 依据:\n[1] 什么是BN\nBN把输入归一化。 问题: 为什么？"
    items = plan(prompt, prompt.index("依据"), [p], tok, pieces_of)
    assert plain(items) == tok(prompt)
    linked = "".join(chr(x.token) for x in items if isinstance(x, Linked))
    # heading + "\n" + sentence are one stretch: the text between them is the passage's own "\n"
    assert linked == "什么是BN\nBN把输入归一化。"
    offsets = [x.offset for x in items if isinstance(x, Linked)]
    assert offsets == list(range(len(offsets)))  # the passage's first tokens, in order
    assert runs(items, 0) == [(prompt.index("什么是BN"), p.key, 0, len(linked))]


def test_plan_ignores_text_before_start_and_short_pieces():
    p = Passage(("是。", "BN把输入归一化。"))
    prompt = "demo: BN把输入归一化。 user: 是。BN把输入归一化。"
    start = prompt.index("user")
    items = plan(prompt, start, [p], tok, pieces_of)
    first = next(i for i, x in enumerate(items) if isinstance(x, Linked))
    assert first == prompt.index("BN把输入归一化。", start)  # not the demo's copy, not the 2-char piece
    assert plain(items) == tok(prompt)


def test_plan_links_a_sentence_twice_when_it_is_quoted_again():
    p = Passage(("Dropout 只在训练时使用。", "测试时关闭。"))
    prompt = "U: [1] Dropout 只在训练时使用。 Q A: 依据[1]：“Dropout 只在训练时使用。”"
    items = plan(prompt, 0, [p], tok, pieces_of)
    r = runs(items, 0)
    assert len(r) == 2 and r[0][2] == r[1][2] == 0  # both copies are the passage's first piece
    assert plain(items) == tok(prompt)


def test_passage_of_cuts_where_evidence_cuts_and_keys_by_content():
    c = Chunk("id", "a.md", "BN 的作用", "BN 把输入归一化。它能加快收敛！\n也有正则化作用。", 0, 30, 1, "sha")
    p = passage_of(c)
    assert "".join(p.pieces[2:]) == c.text
    assert "BN 把输入归一化。" in p.pieces and "它能加快收敛！" in p.pieces
    changed = Chunk("id", "a.md", "BN 的作用", c.text.replace("加快", "减慢"), 0, 30, 1, "sha")
    assert passage_of(changed).key != p.key


# -- the disk store


def test_store_round_trip_and_refuses_other_model_prompt_or_text(tmp_path):
    s = ChunkKVStore(tmp_path, "model-a", 10 ** 9, memory_items=0)
    s.put("k", [1, 2], [5, 6], b"state")
    assert s.get("k", [1, 2], [5, 6]) == b"state"
    assert s.get("k", [1, 3], [5, 6]) is None  # another prompt opening: another file
    assert s.get("k", [1, 2], [5, 7]) is None  # same key, other tokens (tokenizer changed): refused, deleted
    assert s.stats["rejected"] == 1 and not s.files()
    s.put("k", [1, 2], [5, 6], b"state")
    other = ChunkKVStore(tmp_path, "model-b", 10 ** 9, memory_items=0)
    assert other.get("k", [1, 2], [5, 6]) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_store_detects_a_damaged_file_and_deletes_it(tmp_path, damage):
    s = ChunkKVStore(tmp_path, "m", 10 ** 9, memory_items=0)
    s.put("k", [1], [2], b"x" * 1000)
    path = s.files()[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-10]
    elif damage == "flip":
        data[-5] ^= 0xFF
    else:
        data = bytearray(b"not a cache file")
    path.write_bytes(bytes(data))
    assert s.get("k", [1], [2]) is None
    assert s.stats["rejected"] == 1 and not path.exists()


def test_store_evicts_least_recently_used_past_its_budget(tmp_path):
    import os
    import time

    s = ChunkKVStore(tmp_path, "m", 2500, memory_items=0)
    for i, key in enumerate("abc"[:2]):
        s.put(key, [1], [i], b"x" * 1000)
        os.utime(s.path(key, [1]), (time.time() - 100 + i, time.time() - 100 + i))
    assert s.get("a", [1], [0]) is not None  # a is now the most recently used
    s.put("c", [1], [2], b"x" * 1000)
    assert s.stats["evicted"] == 1
    assert s.get("b", [1], [1]) is None and s.get("a", [1], [0]) is not None


# -- KVCache filling a prompt from passage caches


class LinkingContext:
    """Stands in for LlamaContext with sequences: cells are (position, token, how it got there). It keeps
    llama.cpp's rule that a decode continues right after the sequence's last held position."""

    def __init__(self, n_ctx=256, refuse_link=False):
        self.n_ctx = n_ctx
        self.cells: dict[int, tuple[int, str]] = {}
        self.decodes = 0
        self.computed: list[tuple[int, ...]] = []
        self.refuse_link = refuse_link

    def decode_at(self, tokens, positions, logits_last):
        positions = list(positions)
        assert positions == list(range(positions[0], positions[0] + len(positions)))
        assert positions[0] == (max(self.cells) + 1 if self.cells else 0), "llama.cpp would refuse this batch"
        self.decodes += 1
        for p, t in zip(positions, tokens):
            self.cells[p] = (t, "read")
        return 0

    def decode(self, tokens, pos0, logits):
        return self.decode_at(tokens, range(pos0, pos0 + len(tokens)), logits != "none")

    def remove(self, pos0):
        self.cells = {p: c for p, c in self.cells.items() if p < pos0}

    def logits(self, i):
        return None

    def save(self):
        return dict(self.cells)

    def load(self, state):
        self.cells = dict(state)
        return True

    def compute_passage(self, prefix_len, tokens):
        assert max(self.cells) >= prefix_len - 1  # the opening is held
        self.computed.append(tuple(tokens))
        return repr(list(tokens)).encode()

    def link(self, state, prefix_len, moves):
        if self.refuse_link:
            return False
        toks = eval(state.decode())  # noqa: S307 - our own repr above
        for off, n, pos in moves:
            for k in range(n):
                self.cells[pos + k] = (toks[off + k], "linked")
        return True


def _prompt(question: str, passages: list[Passage]):
    text = "SYSTEM 依据:\n" + "\n".join(f"[{n}] " + "".join(p.pieces) for n, p in enumerate(passages, 1))
    text += f"\n问题: {question}\nA: "
    return text, plan(text, 0, passages, tok, pieces_of)


def _linker(tmp_path, passages):
    return PassageKV({p.key: [t for piece in pieces_of(p) for t in piece] for p in passages},
                     ChunkKVStore(tmp_path, "m", 10 ** 9))


def test_prefill_links_passages_and_reads_only_the_rest(tmp_path):
    ps = [Passage(("什么是BN", "\n", "BN把输入归一化。")), Passage(("Dropout", "\n", "测试时关闭Dropout。"))]
    text, items = _prompt("BN有什么用", ps)
    ctx = LinkingContext()
    kv = KVCache(ctx, n_batch=512)
    link = _linker(tmp_path, ps)
    kv.prefill(items, link)
    assert [ctx.cells[p][0] for p in sorted(ctx.cells)] == tok(text)
    linked = sum(isinstance(x, Linked) for x in items)
    assert sum(c[1] == "linked" for c in ctx.cells.values()) == linked == link.stats["linked"]
    assert kv.tokens_read == len(items) - linked
    assert len(ctx.computed) == 2 and len(link.store.files()) == 2

    # Another question on the same passages: nothing is computed again, only the question is read.
    text2, items2 = _prompt("BN能加快收敛吗", ps)
    read0 = kv.tokens_read
    kv.prefill(items2, link)
    assert len(ctx.computed) == 2
    assert [ctx.cells[p][0] for p in sorted(ctx.cells)] == tok(text2)
    assert kv.tokens_read - read0 < len(tok("BN能加快收敛吗")) + 10


def test_a_new_process_uses_the_stored_caches(tmp_path):
    ps = [Passage(("什么是BN", "\n", "BN把输入归一化。"))]
    _, items = _prompt("BN有什么用", ps)
    KVCache(LinkingContext(), 512).prefill(items, _linker(tmp_path, ps))
    ctx = LinkingContext()
    KVCache(ctx, 512).prefill(items, _linker(tmp_path, ps))
    assert ctx.computed == []


def test_a_changed_passage_gets_a_new_cache(tmp_path):
    old = [Passage(("什么是BN", "\n", "BN把输入归一化。"))]
    new = [Passage(("什么是BN", "\n", "BN把输入标准化。"))]
    KVCache(LinkingContext(), 512).prefill(_prompt("BN?", old)[1], _linker(tmp_path, old))
    ctx = LinkingContext()
    text, items = _prompt("BN?", new)
    KVCache(ctx, 512).prefill(items, _linker(tmp_path, new))
    assert len(ctx.computed) == 1
    assert [ctx.cells[p][0] for p in sorted(ctx.cells)] == tok(text)


def test_a_refused_link_is_read_instead_and_not_remembered_as_linked(tmp_path):
    ps = [Passage(("什么是BN", "\n", "BN把输入归一化。"))]
    text, items = _prompt("BN有什么用", ps)
    ctx = LinkingContext(refuse_link=True)
    kv = KVCache(ctx, 512)
    link = _linker(tmp_path, ps)
    kv.prefill(items, link)
    assert [ctx.cells[p][0] for p in sorted(ctx.cells)] == tok(text)
    assert all(c[1] == "read" for c in ctx.cells.values())
    assert link.stats["link_failures"] == 1
    assert not any(isinstance(x, Linked) for x in kv.tokens)


def test_without_passages_linked_items_are_read(tmp_path):
    ps = [Passage(("什么是BN", "\n", "BN把输入归一化。"))]
    text, items = _prompt("BN有什么用", ps)
    ctx = LinkingContext()
    KVCache(ctx, 512).prefill(items)
    assert all(c[1] == "read" for c in ctx.cells.values())
    assert ctx.decodes == 1


# -- the assistant


def test_assistant_offers_passages_to_the_model_only_with_chunk_kv_on(assistant):
    assistant.generator.links_passages = True  # as the llama.cpp backend with its cache directory
    off = assistant.derive(chunk_kv="off")
    off.answer("Dropout 在测试时要用吗？")
    assert off.generator.passages[-1] == ()
    on = off.derive(chunk_kv="on")
    on.answer("Dropout 在测试时要用吗？")
    offered = on.generator.passages[-1]
    assert offered and all(isinstance(p, Passage) for p in offered)
    assistant.generator.links_passages = False  # a backend that cannot link is not offered any
    on.answer("Dropout 在测试时要用吗？")
    assert on.generator.passages[-1] == ()


def test_ensure_passages_builds_only_missing_caches(tmp_path):
    ps = [Passage(("什么是BN", "\n", "BN把输入归一化。")), Passage(("Dropout", "\n", "测试时关闭Dropout。"))]
    _, items = _prompt("", ps)
    link = _linker(tmp_path, ps)
    ctx = LinkingContext()
    kv = KVCache(ctx, 512)
    assert kv.ensure_passages(items, link) == 2
    assert kv.ensure_passages(items, link) == 0 and len(ctx.computed) == 2
    ctx2 = LinkingContext()
    KVCache(ctx2, 512).prefill(_prompt("BN?", ps)[1], _linker(tmp_path, ps))
    assert ctx2.computed == []  # what ensure_passages built is what a question links
