"""Would the reader pick a better sentence to quote than word overlap does (eval/results/not_shipped.md)?

For each answerable tuning question with a gold text, the evidence is selected as the assistant selects
it, and every evidence sentence is scored as the reader's own quote: log P("{n}]：“{sentence}" | the
answer prompt + "依据["), on the linked prompt the answer would use. Rules compared by how often the
sentence they choose holds the gold text:
  - overlap: the shipped choice (rag.evidence.quoted: sentence score, passage [1] ahead on near-ties);
  - reader, whole sentence / per token / first HEAD characters: the reader's likelihood alone;
  - overlap + λ·softmax(reader, first HEAD characters): the two together.
    python eval/compare_quote_choice.py --index-dir index [--set SET] [--out FILE.json]
Choose on tuning sets only. About 6 s per question on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag import prompts  # noqa: E402
from rag.assistant import Assistant  # noqa: E402
from rag.citations import without_fake_sources  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation.data import covered_of, each, evidence_has_gold, golds_of, load_jsonl  # noqa: E402
from rag.evidence import _quote_rank, quoted, select_evidence  # noqa: E402

HEAD = 6  # characters of a sentence enough to tell which one the reader starts to copy
LAMBDAS = (0.1, 0.2, 0.5, 1.0)


def reader_scores(a: Assistant, question: str, ev, hits) -> dict:
    texts = [without_fake_sources(e.text.strip()) for e in ev]
    conts = [f"{e.n}]：“{t}" for e, t in zip(ev, texts)] + [f"{e.n}]：“{t[:HEAD]}" for e, t in zip(ev, texts)]
    scored = a.generator.score(prompts.evidence_messages(question, ev, hits), "依据[", conts,
                               passages=a.linked_passages(hits))
    k = len(ev)
    return {"whole": [s for s, _ in scored[:k]], "tokens": [n for _, n in scored[:k]],
            "head": [s for s, _ in scored[k:]]}


def choices(row: dict) -> dict[str, int]:
    overlap = np.array(row["overlap"])
    whole, head = np.array(row["whole"]), np.array(row["head"])
    p = np.exp(head - head.max())
    p /= p.sum()
    out = {"overlap (shipped)": row["shipped"], "reader, whole sentence": int(np.argmax(whole)),
           "reader, per token": int(np.argmax(whole / np.array(row["tokens"]))),
           f"reader, first {HEAD} characters": int(np.argmax(head))}
    out.update({f"overlap + {lam}·reader": int(np.argmax(overlap + lam * p)) for lam in LAMBDAS})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path, default=None)
    ap.add_argument("--set", default="eval/answers_tune.jsonl")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    a = Assistant.from_settings(Settings.from_env(index_dir=args.index_dir))
    rows = []
    items = [it for it in load_jsonl(Path(args.set)) if covered_of(it) and any(g[2] for g in golds_of(it))]
    from tqdm import tqdm

    for it in each(items, tqdm, "questions"):
        ret = a.retrieve(it["question"])
        ev = select_evidence(ret.query, ret.hits, a.embedder) if ret.hits else []
        if not ev:
            continue
        top = quoted(ev)
        gs = golds_of(it)
        rows.append({"id": it["id"], "n": [e.n for e in ev], "overlap": [_quote_rank(e) for e in ev],
                     "gold": [evidence_has_gold([e], gs) for e in ev],
                     "shipped": next(i for i, e in enumerate(ev) if e.start == top.start and e.n == top.n),
                     **reader_scores(a, it["question"], ev, ret.hits)})
    n = len(rows)
    results = {}
    for r in rows:
        for rule, i in choices(r).items():
            results[rule] = results.get(rule, 0) + r["gold"][i]
    picks_first = sum(r["n"][int(np.argmax(r["head"]))] == 1 for r in rows)
    print(f"\n{n} questions ({args.set}); the evidence holds the gold text for {sum(any(r['gold']) for r in rows)}; "
          f"the reader's own pick is from passage [1] for {picks_first}")
    print("| rule | chosen sentence holds the gold text |\n|---|---|")
    for rule, g in results.items():
        print(f"| {rule} | {g}/{n} = {g / n:.1%} |")
    if args.out:
        args.out.write_text(json.dumps({"set": args.set, "n": n, "results": results, "rows": rows},
                                       ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
