"""`rag bench`: speed and memory benchmarks. Suites: generation, retrieval (see issue 7), ann (rag.ann)."""

from __future__ import annotations


def main(args, settings) -> int:
    suite = args.suite
    if suite == "ann":
        from . import ann

        return ann.main(args, settings)
    raise SystemExit(f"bench suite '{suite}' is not implemented yet")
