"""Gradio chat UI: streamed answers whose every citation opens the passage it came from.

  render.py   pure HTML for answers, citations, sources, evidence, status and the documents table
  backend.py  the Assistant shared by every tab: installed models, switching, warm-up, status
  chat.py     the 问答 tab; docs.py the 文档 tab (rag.corpus does the file work)
  app.py      the gr.Blocks builder (one builder per tab) and launch()
  static/     ui.css and ui.js, shipped as package data

What `rag serve` (rag.server) and `python app.py` use is importable from here.
"""

from .app import CSS, HEAD, SESSIONS, theme, build_app, launch
from .backend import QUEUE_SIZE, Backend, installed_generators, short_model
from ..corpus import MAX_UPLOAD_BYTES

__all__ = ["CSS", "HEAD", "SESSIONS", "theme", "build_app", "launch", "QUEUE_SIZE", "Backend",
           "installed_generators", "short_model", "MAX_UPLOAD_BYTES"]
