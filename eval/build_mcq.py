#!/usr/bin/env python3
"""Parse the 36-question multiple-choice file into eval/mcq.jsonl.

Usage:  python eval/build_mcq.py [--src PATH] [--out PATH]

* --src defaults to corpus/dl_mcq_36.txt (relative to the repo root); if that
  file is absent it falls back to ../shared/seeds/000_*.txt (beside the repository).
* --out defaults to eval/mcq.jsonl.  Output is deterministic (same input ->
  byte-identical output).

Stdlib only.

The source file is messy (scraped from a blog).  Structure of one item:

    N. [label][label2] question text            (Q9 has "[label] N. ..." instead)
    <non "- " lines>   -> continuation of the question (e.g. Q5's "a. ... b. ...")
    - option           -> option block: consecutive "- " lines
    - option
    <rest>             -> explanation (may itself contain "- " bullets)

Generic structural rules used to decide where the option block ends:

  R1  the option block is the run of "- " lines that follows the question; it
      ends at the first line that does not start with "-".
  R2  a "- " line whose text starts with ":" / "：" is an explanation bullet
      whose bold lead term was stripped by the scraper (Q11: "- :即导数不是常数...").
  R3  a "- " line whose text starts with the text of an earlier option followed
      by ":" / "：" (optionally after a parenthesised aside) is an explanation
      bullet that glosses that option (Q13: "- Bagging:独立的集成多个模型...",
      "- Boosting(增强集成学习):...").  Q33's option "f(z)(1-f(z))" starts with
      option "f(z)" but has no colon, so it stays an option.
  R4  non "- " lines before the first "- " line belong to the question, but only
      if an option block follows; an item with no "- " line at all (Q30) has
      lost its options, so everything after the header is explanation.
  R5  a bare "-" line is an option whose content (an image) was lost -> "".

When R2/R3 fire, that line and everything after it is explanation.  Two items
are genuinely ambiguous structurally and are handled by STRUCTURE_OVERRIDES.

The gold answers are NOT marked in the file.  They are in ANSWER_KEY below,
reviewed by hand item by item against the raw text (see eval/MCQ_NOTES.md).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SRC = os.path.join(REPO_ROOT, "corpus", "dl_mcq_36.txt")
FALLBACK_GLOB = os.path.join(os.path.dirname(REPO_ROOT),
                             "shared", "seeds", "000_*.txt")  # ../shared beside the repository
DEFAULT_OUT = os.path.join(REPO_ROOT, "eval", "mcq.jsonl")
EXPECTED_COUNT = 36

LETTERS = "ABCDEFGHIJ"

# ---------------------------------------------------------------------------
# Structural overrides (only where the layout is genuinely ambiguous).
# ---------------------------------------------------------------------------
STRUCTURE_OVERRIDES = {
    # Q23: the first five "- " lines are the numbered items 1..5 the options
    # refer to ("1,2,4,5", "2,3,4,5", "都需要考虑", "1,3,4,5"); the scraper
    # turned the item numbers into bullets.  They are moved into the question
    # text as "1. ...".."5. ..." and only the last four lines are options.
    23: {"question_items": 5},
    # Q26: five "- " lines, but only the first three are options (A/B/C talk
    # about AdaGrad / L-BFGS); the last two ("牛顿法、拟牛顿法...用到了二阶导",
    # "momentum、adgrad用的是一阶导...") are the explanation.  Nothing in the
    # layout separates them (no colon, no gloss of an option), so the option
    # count is fixed here.
    26: {"max_options": 3},
}

# ---------------------------------------------------------------------------
# Answer key, reviewed by hand.
#   id: (gold letters, derived_from, exclude_reason or None, note or None)
# derived_from: "explanation"      -> the file's explanation states/implies it
#               "domain knowledge" -> explanation missing/unhelpful; key from DL knowledge
# Excluded items carry no scored key (letters "") and derived_from None.
# ---------------------------------------------------------------------------
ANSWER_KEY = {
    1: ("B", "explanation", None,
        "Kernel size is a hyperparameter; enlarging it may raise or lower accuracy -> statement is false."),
    2: ("B", "explanation", None,
        "Question text is garbled machine translation, but it asks which statement about perplexity is right; explanation: lower is better."),
    3: ("C", "explanation", None,
        "Question text is garbled MT; dropout only affects training, so test time stays 2s."),
    4: ("D", "explanation", None,
        "Question text is garbled (3x三, 22, 33 = 3x3 conv s2, 2x2 pool s2, 3x3 conv s1); explanation back-computes RF 1->3->6->13."),
    5: ("D", "explanation", None,
        "Explanation gives the order dcaeb. The a-e step list is a question continuation line."),
    6: ("", None,
        "options missing: the network figure and all four options are lost (four empty '-' lines; A-C were images), so the question cannot be answered from the text",
        "Original key is D; its text '可能是A或B,取决于神经网络的权重设置' was split off and is parsed as the first explanation line."),
    7: ("D", "explanation", None,
        "Explanation: exhaustive, random and Bayesian search can all tune hyperparameters ('ABC三种都可实现') -> 都可以."),
    8: ("C", "explanation", None,
        "Explanation argues pooling keeps (approximate) invariance -> 是."),
    9: ("B", "explanation", None,
        "Label precedes the number in the file. 50 weight layers minus the single FC layer = 49 conv layers (projection shortcuts not counted)."),
    10: ("ABD", "explanation", None,
         "Explanation lists 增加样本量, Dropout, 参数范数惩罚; increasing model complexity (C) worsens overfitting. Option list ends at '防止模型过拟合:' (R1)."),
    11: ("ABD", "explanation", None,
         "Explanation bullets (bold terms stripped, '- :...', R2) list non-linearity, (almost everywhere) differentiability, simple computation; saturation is undesirable (non-saturation is the desired property)."),
    12: ("D", "explanation", None,
         "Explanation ends 'CNN,RNN' -> option D '选项A和B' (A and B alone are each incomplete)."),
    13: ("B", "domain knowledge", None,
         "Explanation only defines Bagging/Boosting/Stacking without naming the answer; dropout approximates bagging an ensemble of sub-networks. The '- Bagging:...' bullets are explanation (R3)."),
    14: ("A", "explanation", None,
         "Explanation: BN normalizes the data (layer inputs), not the weights -> A (B is wrong)."),
    15: ("B", "explanation", None,
         "BN normalizes each channel over the batch -> one mean/variance per channel: 1*C*1*1."),
    16: ("D", "explanation", None,
         "Siamese is a network architecture (it uses contrastive loss), not a loss -> siamese_loss is not a CNN loss. (The explanation's '三元损失函数' wording is itself inaccurate but irrelevant to the key.)"),
    17: ("ABCD", "explanation", None,
         "Explanation lists caffe's six solvers: SGD, AdaDelta, AdaGrad, Adam, Nesterov, RMSProp -> all four options."),
    18: ("A", "explanation", None,
         "Explanation: multiply the low-dimension pair first. Check: (AB)C costs mnp+mpq < A(BC)=npq+mnq since m<n and p<q. Option B 'AC(B)' is not a valid order."),
    19: ("A", "explanation", None, "Explanation states 正确答案A."),
    20: ("D", "explanation", None, "Explanation states 正确答案是:D (overshoots the minimum)."),
    21: ("B", "explanation", None, "Explanation: convolution is linear; ReLU is the non-linearity."),
    22: ("A", "explanation", None,
         "Explanation: attention is essentially a similarity measure, and 'not a new model' rules out B."),
    23: ("C", "domain knowledge", None,
         "No explanation. Network type, input data, compute, learning rate and output function all matter when choosing depth (source analyticsvidhya key: all of the above)."),
    24: ("AC", "explanation", None,
         "Disputed item: some Chinese reprints key only C, the English original keys the 'freeze all but the last layer' option (A here). The file's explanation supports both ('(样本少,相似性高)–> 修改输出层', '修改最后几层或最终的softmax图层', commenter: '我认为A没错'); the question asks which methods *can* be used, so both A and C are gold."),
    25: ("B", "explanation", None, "Explanation states 正确答案是:B."),
    26: ("C", "explanation", None,
         "Question asks for the WRONG statement; explanation: adagrad uses first-order derivatives, so 'AdaGrad使用的是二阶差分' is wrong. L-BFGS (quasi-Newton) is second-order, so B is true. Only 3 options (override)."),
    27: ("B", "explanation", None, "Explanation: blob is the data unit, layer is the computation unit."),
    28: ("B", "explanation", None, "Explanation: more layers may overfit, so the statement is false (错误)."),
    29: ("B", "domain knowledge", None,
         "Asks for the INCORRECT statement. The explanation is only a reader comment doubting C; C is in fact true (float16 halves model size). B is false: a GPU-trained TF model can run inference on CPU."),
    30: ("", None,
         "options missing: the options A-D were images (loss-surface plots) and are absent from the file",
         "Original key is B (saddle point); explanation survives but the options do not."),
    31: ("A", "domain knowledge", None,
         "Explanation is unhelpful. '边界值为0' = zero padding i.e. no padding, '深度为1' is a garbled 'stride 1': (224-7)/1+1 = 218, 5 kernels -> 218x218x5."),
    32: ("", None,
         "garbled options, no defensible key: options A-C are vague/contradictory translations (e.g. B '感受野增大,学习小特征的能力变大'), the file's explanation is '不懂', and the commonly circulated key (AD) relies on reading A's '感受野不变' as the paper's 'constant computational budget'",
         "Only D (1x1 reductions cut weights) is unambiguously true; tentative circulated key AD."),
    33: ("D", "explanation", None, "Explanation derives S'(x) = S(x)(1 - S(x))."),
    34: ("D", "domain knowledge", None,
         "No explanation. Low learning rate, too strong regularization and a poor local minimum/plateau can each stall the loss -> 以上都有可能."),
    35: ("", None,
         "truncated question: the four 3x3 kernels ('卷积核如下:') and the actual question are missing, so the options 256/284/296/324 cannot be related to anything",
         None),
    36: ("ABCDE", "domain knowledge", None,
         "No explanation. All five are standard ways to reduce overfitting; '正规化数据' is the Taiwan-style term for regularization (original: 'Add regularization'). The original item's combination options ('All of the above') were lost, leaving the five items as options."),
}


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------
HEADER_RE = re.compile(
    r"^\s*(?P<pre>(?:\[[^\]]*\]\s*)*)(?P<num>\d+)\.\s*(?P<post>(?:\[[^\]]*\]\s*)*)(?P<text>.*)$")
LABEL_RE = re.compile(r"\[([^\]]*)\]")
GLOSS_RE = re.compile(r"^(?:[（(][^()（）]*[)）])?[:：]")


def resolve_src(src: str | None) -> str:
    if src:
        if not os.path.exists(src):
            sys.exit(f"build_mcq: --src {src} does not exist")
        return src
    if os.path.exists(DEFAULT_SRC):
        return DEFAULT_SRC
    hits = sorted(glob.glob(FALLBACK_GLOB))
    if not hits:
        sys.exit(f"build_mcq: neither {DEFAULT_SRC} nor {FALLBACK_GLOB} found")
    return hits[0]


def split_items(lines):
    """Split into [(id, labels, header_text, body_lines)].

    A line is a header only if its number is the next expected id, so
    numbered lines inside explanations cannot start a new item."""
    items = []
    expected = 1
    for line in lines:
        m = HEADER_RE.match(line)
        if m and int(m.group("num")) == expected and (m.group("pre") or m.group("post")):
            labels = LABEL_RE.findall(m.group("pre")) + LABEL_RE.findall(m.group("post"))
            items.append([expected, [l.strip() for l in labels], m.group("text").strip(), []])
            expected += 1
        elif items:
            items[-1][3].append(line)
        elif line.strip():
            raise ValueError(f"text before first question: {line!r}")
    return items


def is_dash(line: str) -> bool:
    return line == "-" or line.startswith("- ")


def dash_text(line: str) -> str:
    return line[1:].strip()


def is_expl_bullet(text: str, options_so_far) -> bool:
    if text.startswith((":", "：")):                      # R2
        return True
    for opt in options_so_far:                           # R3
        if opt and text.startswith(opt) and GLOSS_RE.match(text[len(opt):]):
            return True
    return False


def parse_body(qid, header_text, body):
    body = [l.rstrip() for l in body]
    while body and not body[-1].strip():
        body.pop()
    ov = STRUCTURE_OVERRIDES.get(qid, {})

    first_dash = next((i for i, l in enumerate(body) if is_dash(l)), None)
    if first_dash is None:                                # R4: options lost
        return header_text, [], "\n".join(l for l in body if l.strip())

    question_lines = [header_text] + [l.strip() for l in body[:first_dash] if l.strip()]
    i = first_dash

    n_items = ov.get("question_items", 0)
    for k in range(n_items):
        if not is_dash(body[i]):
            raise ValueError(f"Q{qid}: override expects {n_items} question items")
        question_lines.append(f"{k + 1}. {dash_text(body[i])}")
        i += 1

    options = []
    max_opts = ov.get("max_options")
    while i < len(body) and is_dash(body[i]):            # R1
        text = dash_text(body[i])
        if is_expl_bullet(text, options):                 # R2 / R3
            break
        if max_opts is not None and len(options) >= max_opts:
            break
        options.append(text)                              # R5: "" for bare "-"
        i += 1

    explanation = "\n".join(l for l in body[i:] if l.strip())
    return "\n".join(question_lines), options, explanation


def build(src_path):
    with open(src_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    raw = split_items(lines)
    if len(raw) != EXPECTED_COUNT:
        raise ValueError(f"expected {EXPECTED_COUNT} items, parsed {len(raw)}")
    if set(ANSWER_KEY) != set(range(1, EXPECTED_COUNT + 1)):
        raise ValueError("ANSWER_KEY must cover ids 1..36")

    records = []
    for qid, labels, header_text, body in raw:
        question, options, explanation = parse_body(qid, header_text, body)
        letters, derived_from, exclude_reason, note = ANSWER_KEY[qid]
        excluded = exclude_reason is not None
        answer = [LETTERS.index(c) for c in letters]
        if excluded:
            if answer or derived_from is not None:
                raise ValueError(f"Q{qid}: excluded items carry no key")
        else:
            if not answer:
                raise ValueError(f"Q{qid}: missing key")
            if derived_from not in ("explanation", "domain knowledge"):
                raise ValueError(f"Q{qid}: bad derived_from {derived_from!r}")
            if len(options) < 2 or any(not o for o in options):
                raise ValueError(f"Q{qid}: scored item needs >=2 non-empty options")
            if max(answer) >= len(options) or len(set(answer)) != len(answer):
                raise ValueError(f"Q{qid}: key {letters} out of range for {len(options)} options")
        rec = {
            "id": qid,
            "category": labels,
            "question": question,
            "options": options,
            "answer": answer,
            "explanation": explanation,
            "derived_from": derived_from,
            "excluded": excluded,
            "exclude_reason": exclude_reason,
        }
        if note:
            rec["note"] = note
        records.append(rec)
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=None, help="MCQ source file (default corpus/dl_mcq_36.txt)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output jsonl (default eval/mcq.jsonl)")
    ap.add_argument("--show", action="store_true", help="print every parsed item for review")
    args = ap.parse_args(argv)

    src = resolve_src(args.src)
    records = build(src)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    if args.show:
        for r in records:
            print(f"=== Q{r['id']} {r['category']} excluded={r['excluded']}")
            print("Q:", r["question"])
            for k, o in enumerate(r["options"]):
                mark = "*" if k in r["answer"] else " "
                print(f"  {mark}{LETTERS[k]}. {o}")
            print("E:", r["explanation"][:300].replace("\n", " | "))
            print()
    n_ex = sum(r["excluded"] for r in records)
    n_multi = sum(len(r["answer"]) > 1 for r in records)
    print(f"build_mcq: {len(records)} items from {src} -> {args.out} "
          f"({len(records) - n_ex} scored, {n_ex} excluded, {n_multi} multi-answer)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
