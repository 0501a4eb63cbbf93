"""Which wording of the abstain judge separates covered from near-topic questions best?

The judge is the reader's log P(yes) - log P(no) after a question appended to the answer prompt
(rag.prompts.JUDGE_PREFIX, "能/不能"). Each variant below asks on the same prompt (so they share its KV
cache: a variant costs only its own ~25 tokens), on the rows of `rag eval abstain` (the tuning sets'
out-of-corpus and near-topic questions plus every 4th paraphrase, and all of eval/answers_tune.jsonl).
Each variant then replaces the judge feature (or joins it) in the abstain fit, scored by 5-fold
cross-validation repeated over 10 shuffles, thresholds chosen inside the training folds as rag.abstain.fit
does. Choose on these tuning rows only.

    python eval/compare_judge.py --index-dir index [--json eval/results/judge_variants.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag import prompts  # noqa: E402
from rag.abstain import cross_validate, prf  # noqa: E402
from rag.assistant import Assistant  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import suites, tuning  # noqa: E402
from rag.evaluation.data import covered_of, each  # noqa: E402
from rag.evidence import select_evidence  # noqa: E402

VARIANTS = {  # name -> (prefix, yes, no); "shipped" is rag.prompts'
    "shipped": (prompts.JUDGE_PREFIX, prompts.JUDGE_YES, prompts.JUDGE_NO),
    "has-answer": ("先判断：依据里有没有直接给出这个问题的答案？回答（有/没有）：", "有", "没有"),
    "same-topic": ("先判断：依据说的和问题问的是同一件事吗？回答（是/不是）：", "是", "不是"),
    "closed-book": ("先判断：只根据上面的依据，不用自己的知识，能回答这个问题吗？回答（能/不能）：", "能", "不能"),
    "every-concept": ("先判断：问题里问到的每个概念，依据里都讲到了吗？回答（是/否）：", "是", "否"),
}
JUDGE_SLOT = 3  # rag.abstain.FEATURES: coverage, dense, evidence, judge, unseen


def rows_of(a, items) -> list[dict]:
    out = []
    for it in each(items, a.progress, "judge variants"):
        ret = a.retrieve(it["question"])
        ev = select_evidence(ret.query, ret.hits, a.embedder) if ret.hits else []
        row = {"id": it["id"], "covered": covered_of(it)}
        if ev:
            messages = prompts.evidence_messages(it["question"], ev, ret.hits)
            linked = a.linked_passages(ret.hits)
            for name, (prefix, yes, no) in VARIANTS.items():
                (ly, _), (ln, _) = a.generator.score(messages, prefix, [yes, no], **({"passages": linked} if linked else {}))
                row[name] = ly - ln
        else:
            row.update({name: -10.0 for name in VARIANTS})  # as tuning.abstain_rows scores "no evidence"
        row["x"] = a.abstain_signals(ret, ev, row["shipped"])
        out.append(row)
    return out


def cross_validated(X, covered, seeds=range(10), folds: int = 5) -> dict:
    runs = [prf(cross_validate(X, covered, folds, seed), [not c for c in covered]) for seed in seeds]
    return {k: round(sum(r[k] for r in runs) / len(runs), 3) for k in ("precision", "recall", "f1", "declined_answerable")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    a = Assistant.from_settings(Settings.from_env(index_dir=args.index_dir))
    rows = rows_of(a, tuning.abstain_items(suites._older_sets()) + suites._tune_set())
    covered = [r["covered"] for r in rows]
    table = {}
    for name in VARIANTS:
        table[f"{name} as the judge"] = cross_validated(
            [r["x"][:JUDGE_SLOT] + [r[name]] + r["x"][JUDGE_SLOT + 1:] for r in rows], covered)
        if name != "shipped":
            table[f"shipped + {name}"] = cross_validated([r["x"] + [r[name]] for r in rows], covered)
    table["no judge"] = cross_validated([r["x"][:JUDGE_SLOT] + r["x"][JUDGE_SLOT + 1:] for r in rows], covered)
    print(f"{len(rows)} rows; cross-validated abstain P / R / F1 / answerable declined (mean of 10 shuffles)")
    for name, t in table.items():
        print(f"  {name:28s} {t['precision']:.3f} {t['recall']:.3f} {t['f1']:.3f} {t['declined_answerable']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"variants": VARIANTS, "table": table, "rows": rows}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
