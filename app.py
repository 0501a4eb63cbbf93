"""Open the assistant in the browser: `python app.py` (then visit http://127.0.0.1:7860).

Settings come from the environment like the CLI (RAG_CORPUS_DIR, RAG_INDEX_DIR, RAG_GENERATOR, ...);
the flags below override them. Without --host/--port, gradio's own GRADIO_SERVER_NAME/GRADIO_SERVER_PORT
apply. The server only listens on this machine unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rag.config import env_name, flag_for, help_for


def address(host: str | None, port: int | None) -> tuple[str, int]:
    """Flags first, then gradio's own variables, then this machine only on 7860."""
    from rag.errors import SettingsError

    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    if port is None:
        raw = os.environ.get("GRADIO_SERVER_PORT") or "7860"
        try:
            port = int(raw)
        except ValueError:
            raise SettingsError(f"GRADIO_SERVER_PORT={raw!r}: expected a port number") from None
    if not 0 < port < 65536:
        raise SettingsError(f"port {port}: expected 1-65535")
    return host, port


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Chat UI for the deep-learning interview notes assistant.")
    p.add_argument("--host", help="address to bind (default: GRADIO_SERVER_NAME, else 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT, else 7860)")
    p.add_argument("--api", action="store_true", help="open the programmatic API (gradio_client); closed by default")
    for name, kind in (("corpus_dir", Path), ("index_dir", Path), ("embedder", str), ("generator", str)):
        p.add_argument(flag_for(name), dest=name, type=kind, help=f"{help_for(name)} (env {env_name(name)})")
    p.add_argument("--no-warm-up", action="store_true", help="load the models on the first question, not at start")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    args = p.parse_args(argv)

    from rag.config import Settings
    from rag.errors import RagError
    from rag.ui import launch

    try:
        host, port = address(args.host, args.port)
        settings = Settings.from_env(corpus_dir=args.corpus_dir, index_dir=args.index_dir, embedder=args.embedder,
                                     generator=args.generator)
        launch(settings, host=host, port=port, api=args.api, warm_up=not args.no_warm_up, inbrowser=args.open)
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
