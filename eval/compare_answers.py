"""Paired comparison of two `rag eval answers` runs on the same items (e.g. chunk_kv off vs on).

    python eval/compare_answers.py eval/results/A/answers_blind.json eval/results/B/answers_blind.json

Prints the headline metrics side by side, then every item whose verdict differs (correct, declined,
contradiction), and how many answers are word-for-word the same. With ~40 answerable items one item is
~2.5 points, so the item list says more than the difference of two percentages.
"""

from __future__ import annotations

import json
import sys

METRICS = ["correct", "contradiction_rate", "citation_precision", "evidence_recall", "first_token_p50"]


def verdict(item: dict) -> str:
    if item["abstained"]:
        return "declined" if item["covered"] else "declined (right)"
    if not item["covered"]:
        return "answered (should decline)"
    if item.get("contradiction"):
        return "contradiction"
    return "correct" if item["correct"] else "wrong"


def main(a_path: str, b_path: str) -> None:
    a, b = (json.load(open(p, encoding="utf-8")) for p in (a_path, b_path))
    print(f"{'metric':24s} {'A':>10s} {'B':>10s}")
    for m in METRICS:
        print(f"{m:24s} {a.get(m) or 0:10.3f} {b.get(m) or 0:10.3f}")
    for m in ("precision", "recall", "f1", "declined_answerable"):
        print(f"abstain {m:16s} {a['abstain'].get(m) or 0:10.3f} {b['abstain'].get(m) or 0:10.3f}")
    bi = {i["id"]: i for i in b["items"]}
    same = changed = 0
    for ia in a["items"]:
        ib = bi.get(ia["id"])
        if ib is None:
            continue
        same += ia["answer"] == ib["answer"]
        va, vb = verdict(ia), verdict(ib)
        if va != vb:
            changed += 1
            print(f"\n{ia['id']}: {va} -> {vb}  {ia['question']}\n  A: {ia['answer'][:160]!r}\n  B: {ib['answer'][:160]!r}")
    print(f"\n{same} of {len(a['items'])} answers identical; {changed} verdicts changed")


if __name__ == "__main__":
    main(*sys.argv[1:3])
