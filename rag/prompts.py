"""Every prompt the assistant sends, in one place."""

# Answer prompts. Two orderings were measured with `rag eval answers` (eval/results/answers.md):
#  - "passages" (the old path): five passages, verdict first. The 1.5B model commits to a guess and
#    then cites a passage that says the opposite.
#  - "evidence" (default): the model reads only the selected evidence sentences, and the system writes
#    the start of its answer: a verbatim quote of the best sentence. The model then only continues with
#    a conclusion drawn from a sentence it has just "said", instead of judging first.
SYSTEM_PROMPT = (
    "你是深度学习面试辅导助手。只依据用户给出的编号资料回答，不要使用资料以外的知识。"
    "先用一句话直接回答问题（是/否、结论），再用一两句话解释原因。每句话末尾用方括号注明依据的资料编号。"
    "如果资料没有回答这个问题，就回答：资料中没有相关内容。回答使用与问题相同的语言。"
)

# One worked example: small models copy a demonstrated format far more reliably than they follow
# instructions (without it the 1.5B model often answered with a bare "[3]").
DEMO_USER = (
    "资料:\n[1] 来源: notes.md · 学习率太大会怎样?\n学习率太大时，参数更新步长过大，损失会震荡甚至发散，模型无法收敛。\n\n"
    "[2] 来源: notes.md · 什么是 epoch?\n一个 epoch 指完整遍历一次训练集。\n\n问题: 学习率设置得很大会有什么后果？"
)
DEMO_ASSISTANT = "学习率过大会导致模型难以收敛 [1]。原因是参数更新的步长过大，损失会来回震荡甚至发散 [1]。"

PASSAGE_TEMPLATE = "[{n}] 来源: {source} · {heading}\n{text}"

USER_TEMPLATE = "资料:\n{passages}\n\n问题: {question}"

EVIDENCE_SYSTEM = (
    "你是深度学习面试辅导助手。用户给出从笔记中选出的依据句和一个问题。"
    "回答时先引用最能回答问题的依据原文，然后写“所以，”加上一句结论。结论必须与依据的意思完全一致："
    "依据说“不”就是“不”，依据说“少”就是“少”，不能添加依据里没有的原因或细节。"
    "每句话末尾用方括号注明依据编号。如果依据不能回答问题，就回答：资料中没有相关内容。"
)
EVIDENCE_DEMO_USER = (
    "依据:\n[1] 学习率太大会怎样?\n学习率太大时，参数更新步长过大，损失会震荡甚至发散。\n"
    "[2] 小批量的大小对训练有什么影响?\n批量越小，梯度估计的噪声越大。\n\n问题: 学习率设大一点能让模型收敛得更稳吗？"
)
EVIDENCE_DEMO_ASSISTANT = (
    "依据[1]：“学习率太大时，参数更新步长过大，损失会震荡甚至发散。”\n所以，学习率设得太大不会让模型收敛得更稳，"
    "反而会让损失震荡甚至发散 [1]。"
)
EVIDENCE_GROUP = "[{n}] {heading}\n{sentences}"
EVIDENCE_USER = "依据:\n{evidence}\n\n问题: {question}"
# The answer's opening, written by the system: the reader continues after a verbatim quote.
QUOTE_PREFIX = "依据[{n}]：“{sentence}”\n所以，"
ANSWER_STYLES = ("evidence", "passages")

# Is the question answered by the evidence? Scored as the likelihood of "能" vs "不能" after this
# prefix, on the same prompt as the answer (so the answer reuses its KV cache), and turned into a
# probability by the calibration in rag/abstain.py. The greedy reply is "能" for nearly everything.
JUDGE_PREFIX = "先判断：上面的依据能直接回答这个问题吗？回答（能/不能）："
JUDGE_YES, JUDGE_NO = "能", "不能"

# Multiple choice, one option at a time (rag/evaluation/mcq_judge.py): the log-odds of "对" vs "错" for
# "is this candidate answer right?", with the option's own evidence or closed-book. Judging options one
# by one makes the result independent of their order.
OPTION_SYSTEM = "你是深度学习考试阅卷老师。判断候选答案是否正确地回答了问题。只回答“对”或“错”。"
OPTION_USER = "{context}问题：{question}\n候选答案：{option}\n这个候选答案对吗？"
OPTION_CONTEXT = "参考资料：\n{evidence}\n\n"
OPTION_PREFIX = "回答："
OPTION_TRUE, OPTION_FALSE = "对", "错"

# Does the evidence sentence support a sentence of the answer? Used only where the cheap checks
# (overlap, negation, antonyms) are unsure; see rag/verify.py.
SUPPORT_SYSTEM = "判断“说法”是否与“依据”的意思一致。只回答“是”或“否”。"
SUPPORT_USER = "依据：{evidence}\n说法：{claim}\n说法与依据的意思一致吗？"
SUPPORT_PREFIX = "回答："
SUPPORT_YES, SUPPORT_NO = "是", "否"

NOT_COVERED_ZH = "资料库中没有找到能回答这个问题的内容，所以我不作回答。下面是最接近的几段资料，供参考："
NOT_COVERED_EN = "The documents do not cover this question, so I will not guess. The closest passages are listed below:"

# English questions are searched with their Chinese translation added (rag/translate.py). Two worked
# examples on everyday topics: the model copies the format (one line, the notes' terms, abbreviations
# kept) instead of answering the question.
TRANSLATE_SYSTEM = (
    "把英文的深度学习面试问题翻译成中文，使用中文教材里的标准术语（如 梯度消失、过拟合、批归一化、感受野、池化、"
    "激活函数），英文缩写保留原样。只输出翻译后的中文问题。"
)
TRANSLATE_SHOTS = (
    ("Why does my model do great on training data but badly on new data, and how do I fix it?",
     "为什么模型在训练集上表现很好，在新数据上表现很差（过拟合），怎么解决？"),
    ("Why do people shuffle the training data every epoch?", "为什么每个 epoch 都要打乱训练数据的顺序？"),
)


def translation_messages(question: str) -> list[dict]:
    messages = [{"role": "system", "content": TRANSLATE_SYSTEM}]
    for english, chinese in TRANSLATE_SHOTS:
        messages += [{"role": "user", "content": english}, {"role": "assistant", "content": chinese}]
    return messages + [{"role": "user", "content": question}]


# Follow-up questions are rewritten into stand-alone questions before retrieval.
REWRITE_SYSTEM = "把用户的追问改写成一个不依赖上下文、可以独立检索的完整问题。只输出改写后的问题本身。"
REWRITE_USER = "对话历史:\n{history}\n\n追问: {question}\n\n改写后的独立问题:"

# Multiple-choice scoring (rag/evaluation/mcq.py). Every prompt of an item opens with the same head
# (system, shared evidence, the question in its positive form) so the model reads it once (prefix
# KV reuse); only the short task tail differs:
#  - text: the option's text scored as the answer, no option list shown (order-free);
#  - judge: "is this candidate right?" log-odds of 对/错, one option at a time (order-free);
#  - letter: the option list in one rotation, the letter scored ("正确答案是: B"), averaged over
#    the rotations so that every option is seen at every position.
MCQ_SYSTEM = "你是深度学习考试答题助手。结合参考资料（如有）作答。"
MCQ_HEAD = "{context}题目：{question}\n"
MCQ_EVIDENCE = "参考资料：\n{evidence}\n\n"
MCQ_TEXT_TAIL = "请直接写出正确答案的内容。"
MCQ_TEXT_PREFIX = "答案："
MCQ_LETTER_TAIL = "选项：\n{options}\n请选出正确选项。"
MCQ_ANSWER_PREFIX = "正确答案是: "
# The earlier one-prompt form (options listed, passages in full), still timed by `rag bench generation`.
MCQ_USER = "{context}问题: {question}\n选项:\n{options}\n\n请给出正确选项的内容。"
MCQ_CONTEXT = "参考资料:\n{passages}\n\n"


def format_passages(hits, max_chars: int = 500) -> str:
    parts = []
    for n, h in enumerate(hits, 1):
        c = h.chunk
        text = c.text if len(c.text) <= max_chars else c.text[:max_chars] + "…"
        parts.append(PASSAGE_TEMPLATE.format(n=n, source=c.source, heading=c.heading or "-", text=text))
    return "\n\n".join(parts)


def note_joint(chunk, a, b, apart: str) -> str:
    """What goes between sentences `a` and `b` of one chunk: the note's own joint where they are adjacent
    in it (no space inside Chinese text), else `apart`."""
    gap = chunk.text[a.end - chunk.start:b.start - chunk.start] if a.end <= b.start else None
    return gap if gap in ("", " ") else apart


def format_evidence(evidence, hits) -> str:
    """Evidence grouped by passage: its question heading once, then the chosen sentences, which keep the
    note's own joint where they are adjacent in it (no space inside Chinese text; and the model's
    per-chunk KV cache then links them as one stretch)."""
    groups: dict[int, list] = {}
    for e in evidence:
        groups.setdefault(e.n, []).append(e)
    out = []
    for n, es in groups.items():
        chunk = hits[n - 1].chunk
        text = es[0].text
        for a, b in zip(es, es[1:]):
            text += note_joint(chunk, a, b, " ") + b.text
        out.append(EVIDENCE_GROUP.format(n=n, heading=chunk.heading or "-", sentences=text))
    return "\n".join(out)


def evidence_messages(question: str, evidence, hits) -> list[dict]:
    return [
        {"role": "system", "content": EVIDENCE_SYSTEM},
        {"role": "user", "content": EVIDENCE_DEMO_USER},
        {"role": "assistant", "content": EVIDENCE_DEMO_ASSISTANT},
        {"role": "user", "content": EVIDENCE_USER.format(evidence=format_evidence(evidence, hits), question=question)},
    ]


QUOTE_JOIN = "……"  # between two quoted sentences of one passage that are not next to each other


def quote_prefix(quoted: list, chunk) -> str:
    """The system-written opening of an evidence answer: the quoted sentences of `chunk` (note order),
    verbatim; adjacent ones keep the note's own joint. Source markers a document wrote into itself
    ("[source: hr.pdf p.4]") are dropped: a source shown in an answer always comes from retrieval."""
    from .citations import without_fake_sources

    text = quoted[0].text.strip()
    for a, b in zip(quoted, quoted[1:]):
        text += note_joint(chunk, a, b, QUOTE_JOIN) + b.text.strip()
    return QUOTE_PREFIX.format(n=quoted[0].n, sentence=without_fake_sources(text))


def option_messages(question: str, option: str, evidence: str | None) -> list[dict]:
    context = OPTION_CONTEXT.format(evidence=evidence) if evidence else ""
    return [{"role": "system", "content": OPTION_SYSTEM},
            {"role": "user", "content": OPTION_USER.format(context=context, question=question, option=option)}]


MCQ_JUDGE_TAIL = "候选答案：{option}\n这个候选答案对吗？只回答“对”或“错”。"


def mcq_messages(question: str, evidence: str | None, tail: str) -> list[dict]:
    """One MCQ prompt: the item's shared head (evidence, question) and a task tail (MCQ_*_TAIL)."""
    context = MCQ_EVIDENCE.format(evidence=evidence) if evidence else ""
    return [{"role": "system", "content": MCQ_SYSTEM},
            {"role": "user", "content": MCQ_HEAD.format(context=context, question=question) + tail}]


def support_messages(evidence: str, claim: str) -> list[dict]:
    return [{"role": "system", "content": SUPPORT_SYSTEM},
            {"role": "user", "content": SUPPORT_USER.format(evidence=evidence, claim=claim)}]


def answer_messages(question: str, hits) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": DEMO_USER},
        {"role": "assistant", "content": DEMO_ASSISTANT},
        {"role": "user", "content": USER_TEMPLATE.format(passages=format_passages(hits), question=question)},
    ]


def is_chinese(text: str) -> bool:
    return sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff") >= max(1, len(text) // 10)


NOT_COVERED_MARKERS = ("资料中没有相关内容", "资料中没有", "资料未涉及", "资料没有提到", "not covered", "do not cover",
                       "does not cover", "no relevant information")


def says_not_covered(answer: str) -> bool:
    """True when the model's answer opens by declining (the system prompt tells it how to)."""
    head = answer.strip()[:40].lower()
    return any(m.lower() in head for m in NOT_COVERED_MARKERS)


NOT_MENTIONED_ZH = "笔记里没有提到 {names}。"
NOT_MENTIONED_EN = "The notes never mention {names}. "


def not_covered_message(question: str, unknown: list[str] | None = None) -> str:
    zh = is_chinese(question)
    head = ((NOT_MENTIONED_ZH if zh else NOT_MENTIONED_EN).format(names=", ".join(unknown))) if unknown else ""
    return head + (NOT_COVERED_ZH if zh else NOT_COVERED_EN)
