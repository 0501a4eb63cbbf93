#!/usr/bin/env python3
"""Validate the committed evaluation sets (stdlib only).

    python eval/check_sets.py            # exit 0 = all good, 1 = errors found

Checks eval/mcq.jsonl, eval/retrieval.jsonl and eval/answers.jsonl:
  * every line is valid JSON with the required fields and types, ids unique;
  * MCQ: ids 1..N, answer indices unique and within the options, scored items
    have a key + derived_from, excluded items have a reason; question line,
    options and explanation lines occur verbatim in the MCQ source file;
  * retrieval / answers: source is a known corpus file, gold_contains and
    gold_heading occur verbatim in that file (also for alt_golds); a
    gold_contains occurring more than once, or outside 10-30 chars, is a
    warning; coverage of every question heading (heading item + paraphrase).

Corpus files are read from corpus/<name>; if missing, from the original seed
files in ../shared/seeds beside the repository (same text).

`lang` convention (retrieval.jsonl): "en" = no CJK characters; "mixed" = Latin
letters make up >= 30% of (Latin letters + CJK characters); otherwise "zh"
(Chinese sentences with a few English terms/abbreviations such as BN count as zh).
"""
from __future__ import annotations

import glob
import json
import os
import sys
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join(REPO, "eval")
SEED_DIR = os.path.join(os.path.dirname(REPO), "shared", "seeds")
SOURCES = {  # corpus name -> seed file prefix
    "dl_mcq_36.txt": "000_",
    "dl_interview_12.txt": "001_",
    "ali_dl_interview.txt": "002_",
    "dl_interview_25.md": "003_",
    "dl_interview_54.txt": "004_",
}
# number of question headings per file that must be covered by retrieval.jsonl
HEADING_COUNTS = {"dl_interview_12.txt": 12, "ali_dl_interview.txt": 19,
                  "dl_interview_25.md": 25, "dl_interview_54.txt": 54}
KINDS = {"heading", "paraphrase", "out_of_corpus"}
LANGS = {"zh", "en", "mixed"}

errors: list[str] = []
warnings: list[str] = []
_text_cache: dict[str, str] = {}


def err(msg):
    errors.append(msg)


def warn(msg):
    warnings.append(msg)


def corpus_text(name):
    if name not in _text_cache:
        path = os.path.join(REPO, "corpus", name)
        if not os.path.exists(path):
            hits = sorted(glob.glob(os.path.join(SEED_DIR, SOURCES[name] + "*.txt")))
            if not hits:
                raise SystemExit(f"check_sets: cannot find corpus file {name}")
            path = hits[0]
        with open(path, encoding="utf-8") as f:
            _text_cache[name] = f.read()
    return _text_cache[name]


def load(fn):
    path = os.path.join(EVAL, fn)
    rows = []
    if not os.path.exists(path):
        err(f"{fn}: missing")
        return rows
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                err(f"{fn}:{n}: blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                err(f"{fn}:{n}: invalid JSON ({e})")
                continue
            if not isinstance(obj, dict):
                err(f"{fn}:{n}: not an object")
                continue
            rows.append(obj)
    return rows


def need(fn, r, field, types, nullable=False):
    rid = r.get("id", "?")
    if field not in r:
        err(f"{fn} id={rid}: missing field {field!r}")
        return False
    v = r[field]
    if v is None and nullable:
        return True
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
        err(f"{fn} id={rid}: field {field!r} has type {type(v).__name__}")
        return False
    return True


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


def unique_ids(fn, rows):
    c = Counter(r.get("id") for r in rows)
    for k, v in c.items():
        if v > 1:
            err(f"{fn}: duplicate id {k!r} ({v}x)")


def check_gold(fn, rid, source, heading, contains, where="gold"):
    if source not in SOURCES:
        err(f"{fn} id={rid}: {where} source {source!r} is not a corpus file")
        return
    text = corpus_text(source)
    if not isinstance(contains, str) or not contains:
        err(f"{fn} id={rid}: {where} gold_contains missing")
        return
    n = text.count(contains)
    if n == 0:
        err(f"{fn} id={rid}: {where} gold_contains not in {source}: {contains!r}")
    elif n > 1:
        warn(f"{fn} id={rid}: {where} gold_contains occurs {n}x in {source}: {contains!r}")
    if not 6 <= len(contains) <= 40:
        err(f"{fn} id={rid}: {where} gold_contains length {len(contains)} outside 6..40")
    elif not 10 <= len(contains) <= 30:
        warn(f"{fn} id={rid}: {where} gold_contains length {len(contains)} outside 10..30: {contains!r}")
    if heading is not None:
        if not isinstance(heading, str) or not heading or heading not in text:
            err(f"{fn} id={rid}: {where} gold_heading not in {source}: {heading!r}")


# ---------------------------------------------------------------------------
def check_mcq():
    fn = "mcq.jsonl"
    rows = load(fn)
    unique_ids(fn, rows)
    src = corpus_text("dl_mcq_36.txt")
    ids = []
    for r in rows:
        ok = all([
            need(fn, r, "id", int), need(fn, r, "category", list), need(fn, r, "question", str),
            need(fn, r, "options", list), need(fn, r, "answer", list), need(fn, r, "explanation", str),
            need(fn, r, "derived_from", str, nullable=True), need(fn, r, "excluded", bool),
            need(fn, r, "exclude_reason", str, nullable=True),
        ])
        if "note" in r and not isinstance(r["note"], str):
            err(f"{fn} id={r.get('id')}: note must be a string")
        if not ok:
            continue
        rid = r["id"]
        ids.append(rid)
        if not r["category"] or not all(isinstance(c, str) and c for c in r["category"]):
            err(f"{fn} id={rid}: category must be a non-empty list of strings")
        for c in r["category"]:
            if f"[{c}]" not in src:
                err(f"{fn} id={rid}: category [{c}] not in source")
        if not all(isinstance(o, str) for o in r["options"]):
            err(f"{fn} id={rid}: options must be strings")
            continue
        ans = r["answer"]
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in ans):
            err(f"{fn} id={rid}: answer must be a list of ints")
            continue
        if len(set(ans)) != len(ans):
            err(f"{fn} id={rid}: duplicate answer indices")
        for a in ans:
            if not 0 <= a < len(r["options"]):
                err(f"{fn} id={rid}: answer index {a} outside options (n={len(r['options'])})")
        if r["excluded"]:
            if not r["exclude_reason"]:
                err(f"{fn} id={rid}: excluded without exclude_reason")
            if ans:
                warn(f"{fn} id={rid}: excluded item still carries an answer")
        else:
            if r["exclude_reason"] is not None:
                err(f"{fn} id={rid}: exclude_reason set on a scored item")
            if not ans:
                err(f"{fn} id={rid}: scored item without answer")
            if r["derived_from"] not in ("explanation", "domain knowledge"):
                err(f"{fn} id={rid}: derived_from must be 'explanation' or 'domain knowledge'")
            if len(r["options"]) < 2 or not all(o.strip() for o in r["options"]):
                err(f"{fn} id={rid}: scored item needs >= 2 non-empty options")
            if r["derived_from"] == "explanation" and not r["explanation"].strip():
                err(f"{fn} id={rid}: derived_from=explanation but explanation is empty")
        # verbatim checks against the source
        if r["question"].split("\n")[0] not in src:
            err(f"{fn} id={rid}: question first line not found in source")
        for o in r["options"]:
            if o and f"- {o}" not in src:
                err(f"{fn} id={rid}: option not found in source: {o!r}")
        for line in r["explanation"].split("\n"):
            if line and line not in src:
                err(f"{fn} id={rid}: explanation line not found in source: {line[:40]!r}")
    if ids and sorted(ids) != list(range(1, len(ids) + 1)):
        err(f"{fn}: ids are not 1..{len(ids)}")
    scored = [r for r in rows if not r.get("excluded")]
    return (f"{fn}: {len(rows)} items, {len(scored)} scored, {len(rows) - len(scored)} excluded, "
            f"{sum(len(r.get('answer', [])) > 1 for r in rows)} multi-answer")


def check_alt(fn, r, key):
    alts = r.get(key, [])
    if not isinstance(alts, list):
        err(f"{fn} id={r.get('id')}: {key} must be a list")
        return
    for a in alts:
        if not isinstance(a, dict):
            err(f"{fn} id={r.get('id')}: {key} entries must be objects")
            continue
        check_gold(fn, r.get("id"), a.get("source"), a.get("gold_heading"), a.get("gold_contains"), where=key)


def check_retrieval():
    fn = "retrieval.jsonl"
    rows = load(fn)
    unique_ids(fn, rows)
    kinds = Counter()
    langs = Counter()
    heading_items = Counter()
    paraphrased = set()
    headed = set()
    for r in rows:
        ok = all([
            need(fn, r, "id", str), need(fn, r, "question", str), need(fn, r, "kind", str),
            need(fn, r, "source", str, nullable=True), need(fn, r, "gold_heading", str, nullable=True),
            need(fn, r, "gold_contains", str, nullable=True), need(fn, r, "lang", str),
        ])
        if not ok:
            continue
        rid = r["id"]
        if not r["question"].strip():
            err(f"{fn} id={rid}: empty question")
        if r["kind"] not in KINDS:
            err(f"{fn} id={rid}: bad kind {r['kind']!r}")
            continue
        if r["lang"] not in LANGS:
            err(f"{fn} id={rid}: bad lang {r['lang']!r}")
        kinds[r["kind"]] += 1
        langs[(r["kind"], r["lang"])] += 1
        check_alt(fn, r, "alt_golds")
        if r["kind"] == "out_of_corpus":
            if r["source"] is not None or r["gold_heading"] is not None or r["gold_contains"] is not None:
                err(f"{fn} id={rid}: out_of_corpus item must have null source/gold fields")
            continue
        check_gold(fn, rid, r["source"], r["gold_heading"], r["gold_contains"])
        key = (r["source"], r["gold_heading"])
        if r["kind"] == "heading":
            heading_items[r["source"]] += 1
            headed.add(key)
            if r["gold_heading"] not in r["question"]:
                err(f"{fn} id={rid}: heading item question does not contain its gold_heading")
        else:
            paraphrased.add(key)
            if r["question"].strip() == r["gold_heading"].strip():
                err(f"{fn} id={rid}: paraphrase identical to its heading")
    for src, n in HEADING_COUNTS.items():
        if heading_items[src] != n:
            err(f"{fn}: {heading_items[src]} heading items for {src}, expected {n}")
    missing = sorted(h for h in headed if h not in paraphrased)
    if missing:
        warn(f"{fn}: {len(missing)} headings without a paraphrase: {missing[:5]}...")
    para = [(k, v) for k, v in langs.items() if k[0] == "paraphrase"]
    lang_s = ", ".join(f"{k[1]}={v}" for k, v in sorted(para))
    return (f"{fn}: {len(rows)} items ({', '.join(f'{k}={v}' for k, v in sorted(kinds.items()))}); "
            f"paraphrase langs: {lang_s}; headings with >=1 paraphrase: {len(headed & paraphrased)}/{len(headed)}")


def check_answers():
    fn = "answers.jsonl"
    rows = load(fn)
    unique_ids(fn, rows)
    n_in = n_out = 0
    for r in rows:
        ok = all([
            need(fn, r, "id", str), need(fn, r, "question", str), need(fn, r, "source", str, nullable=True),
            need(fn, r, "gold_contains", str, nullable=True), need(fn, r, "reference_keywords", list),
            need(fn, r, "in_corpus", bool),
        ])
        if not ok:
            continue
        rid = r["id"]
        kws = r["reference_keywords"]
        if not all(isinstance(k, str) and k.strip() for k in kws):
            err(f"{fn} id={rid}: reference_keywords must be non-empty strings")
        if r["in_corpus"]:
            n_in += 1
            check_gold(fn, rid, r["source"], r.get("gold_heading"), r["gold_contains"])
            if not 3 <= len(kws) <= 6:
                err(f"{fn} id={rid}: in-corpus item needs 3-6 reference_keywords (has {len(kws)})")
            check_alt(fn, r, "alt_golds")
        else:
            n_out += 1
            if r["source"] is not None or r["gold_contains"] is not None:
                err(f"{fn} id={rid}: out-of-corpus item must have null source/gold_contains")
    return f"{fn}: {len(rows)} items ({n_in} in corpus, {n_out} out of corpus)"


def main():
    summaries = [check_mcq(), check_retrieval(), check_answers()]
    for s in summaries:
        print(s)
    for w in warnings:
        print("WARN ", w)
    for e in errors:
        print("ERROR", e)
    print(f"check_sets: {len(errors)} error(s), {len(warnings)} warning(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
