"""The OpenAI wire format for `rag serve` (pure: no server state): request parsing with limits,
completion and stream-chunk bodies with the `sources` extra field, and errors in OpenAI's shape."""

from __future__ import annotations

import json
import logging

from .errors import FeedbackError, GenerationTimeout, QueryError, RagError, ServiceBusy

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MAX_MESSAGES = 200


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


def api_error(e: BaseException) -> ApiError:
    """The HTTP form of a library error."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ServiceBusy):
        return ApiError(429 if e.full else 503, str(e), "rate_limit_error" if e.full else "server_busy",
                        "queue_full" if e.full else "queue_timeout", {"Retry-After": str(e.retry_after)})
    if isinstance(e, GenerationTimeout):
        return ApiError(504, str(e), "timeout_error", "generation_timeout")
    if isinstance(e, FeedbackError):
        return ApiError(404 if e.not_found else 400, str(e), code="unknown_id" if e.not_found else "bad_feedback")
    if isinstance(e, QueryError):
        return ApiError(400, str(e), code="bad_question")
    if isinstance(e, RagError):
        return ApiError(500, str(e), "server_error", type(e).__name__)
    log.error("request failed", exc_info=e)
    return ApiError(500, f"internal error ({type(e).__name__}); see the server log", "server_error")


def message_text(message) -> str:
    if not isinstance(message, dict):
        raise ApiError(400, "each message must be an object with role and content")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]; other part types are ignored
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ApiError(400, "message content must be a string or a list of parts")


def conversation(messages) -> tuple[str, list[tuple[str, str]]]:
    """(question, earlier (user, assistant) turns). System messages are ignored: the assistant's own
    prompts decide how it answers."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list", code="messages")
    if len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"at most {MAX_MESSAGES} messages", code="messages")
    *earlier, last = messages
    if not isinstance(last, dict) or last.get("role") != "user":
        raise ApiError(400, "the last message must have role 'user' (the question)", code="messages")
    question = message_text(last).strip()
    if not question:
        raise ApiError(400, "the question is empty", code="bad_question")
    history, pending = [], None
    for m in earlier:
        role, text = (m.get("role") if isinstance(m, dict) else None), message_text(m).strip()
        if role == "user":
            pending = text
        elif role == "assistant" and pending:
            history.append((pending, text))
            pending = None
    return question, history


def sources(answer) -> list[dict]:
    """Every retrieved passage, numbered as the answer's [n] markers number them."""
    cited = {n for n, _ in answer.sources}
    out = []
    for n, h in enumerate(answer.hits, 1):
        c = h.chunk
        out.append({"n": n, "file": c.source, "line": c.line, "span": [c.start, c.end], "heading": c.heading,
                    "text": c.text, "id": c.id, "score": round(h.score, 6), "cited": n in cited})
    return out


def completion(cid: str, model: str, created: int, answer) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop"}],
            "sources": sources(answer), "abstained": answer.abstained, "query": answer.query}


def chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None, **extra) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def read_json(request, limit: int = MAX_BODY_BYTES) -> dict:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send the body as application/json", code="content_type")
    size, parts = 0, []
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"request body over {limit // 1024} KB", code="body_too_large")
        parts.append(part)
    try:
        body = json.loads(b"".join(parts) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON", code="bad_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="bad_json")
    return body


def int_field(body: dict, name: str, lo: int, hi: int, default=None):
    v = body.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ApiError(400, f"`{name}` must be an integer from {lo} to {hi}", code=name)
    return v
