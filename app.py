"""Open the assistant in the browser: `python app.py` (then visit http://127.0.0.1:7860).

Settings come from the environment like the CLI (RAG_CORPUS_DIR, RAG_INDEX_DIR, RAG_GENERATOR, ...);
the flags below override them. The server only listens on this machine unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Chat UI for the deep-learning interview notes assistant.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--api", action="store_true", help="open the programmatic API (gradio_client); closed by default")
    p.add_argument("--corpus", type=Path, help="corpus directory (default ./corpus, env RAG_CORPUS_DIR)")
    p.add_argument("--index-dir", type=Path, help="index directory (default ./index, env RAG_INDEX_DIR)")
    p.add_argument("--generator", help="LLM spec, e.g. packaged:qwen2.5-coder-0.5b-instruct")
    p.add_argument("--no-warm-up", action="store_true", help="load the models on the first question, not at start")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    args = p.parse_args(argv)

    from rag.config import Settings
    from rag.errors import RagError
    from rag.ui import launch

    try:
        settings = Settings.from_env(corpus_dir=args.corpus, index_dir=args.index_dir, generator=args.generator)
        launch(settings, host=args.host, port=args.port, api=args.api, warm_up=not args.no_warm_up,
               inbrowser=args.open)
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
