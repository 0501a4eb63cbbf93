"""The /v1 HTTP handlers of `rag serve` (rag.server): OpenAI chat completions (plain or SSE), retrieval,
models and feedback. Each handler reads and checks its own request (rag.openai_format), waits for the one
generation slot (rag.gate) off the event loop, and cancels the answer when the client goes away."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

from .config import MAX_PASSAGES
from .openai_format import ApiError, api_error, chunk, completion, conversation, int_field, read_json, sources

log = logging.getLogger("rag.server")


async def acquire(gate, request):
    """The slot, waited for in a thread; a client that goes away while waiting gives up its place."""
    import anyio

    gate.check_room()
    cancelled, box = threading.Event(), {}

    async def watch():
        while not cancelled.is_set():
            await anyio.sleep(0.25)
            if await request.is_disconnected():
                cancelled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            box["slot"] = await anyio.to_thread.run_sync(lambda: gate.acquire(cancelled=cancelled))
        except BaseException as e:  # raised after the task group closes (no exception groups)
            box["error"] = e
        tg.cancel_scope.cancel()
    if "error" in box:
        raise box["error"]
    return box["slot"]


_END = object()


def _next(run, poll):
    try:
        return run.next(poll)
    except StopIteration:
        return _END


async def events(run, request):
    """The answer's events; stops (and cancels the answer) when the client disconnects."""
    import anyio

    try:
        while True:
            ev = await anyio.to_thread.run_sync(_next, run, 0.5, abandon_on_cancel=True)
            if ev is _END:
                return
            if await request.is_disconnected():
                log.info("client went away: answer cancelled")
                return
            if ev is not None:
                yield ev
    finally:
        run.cancel()


def error_response(e: BaseException):
    from fastapi.responses import JSONResponse

    err = api_error(e)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class Routes:
    def __init__(self, service):
        self.service = service

    def table(self) -> list[tuple[str, object, list[str]]]:
        return [("/v1/models", self.models, ["GET"]), ("/v1/retrieve", self.retrieve, ["POST"]),
                ("/v1/chat/completions", self.chat, ["POST"]), ("/v1/feedback", self.feedback, ["POST"]),
                ("/v1/{rest:path}", self.unknown, ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])]

    async def models(self, request):
        from fastapi.responses import JSONResponse

        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local"}
                                                        for m in self.service.models()]})

    async def retrieve(self, request):
        import anyio
        from fastapi.responses import JSONResponse

        try:
            body = await read_json(request)
            query = body.get("query")
            if not isinstance(query, str) or not query.strip():
                raise ApiError(400, "`query` must be a non-empty string", code="query")
            k = int_field(body, "k", 1, 50)
            mode = body.get("mode", "hybrid")
            if mode not in ("hybrid", "dense", "bm25"):
                raise ApiError(400, "`mode` must be hybrid, dense or bm25", code="mode")
            r = await anyio.to_thread.run_sync(lambda: self.service.backend.assistant.search(query, k, mode=mode))
        except Exception as e:
            return error_response(e)
        return JSONResponse({"query": r.query, "covered": r.covered, "results": [h.to_dict() for h in r.hits]})

    async def _admit(self, request):
        """Check the request (a bad one is a 400 before any waiting), switch model if asked, take the slot."""
        import anyio

        from .retriever import clean_query

        body = await read_json(request)
        question, history = conversation(body.get("messages"))
        clean_query(question)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "`stream` must be true or false", code="stream")
        k = int_field(body, "top_k", 1, MAX_PASSAGES)
        switch_to = self.service.check_model(body.get("model"))
        if switch_to:
            await anyio.to_thread.run_sync(self.service.switch, switch_to)
        self.service.check_ready()
        model = self.service.backend.model
        slot = await acquire(self.service.gate, request)
        return question, history, k, stream, model, slot

    async def chat(self, request):
        from fastapi.responses import StreamingResponse

        try:
            question, history, k, stream, model, slot = await self._admit(request)
        except Exception as e:
            return error_response(e)
        run = self.service.gate.run(slot, self.service.answer_events(question, history, k))
        reply = _Reply(f"chatcmpl-{uuid.uuid4().hex}", model, int(time.time()), self.service)
        if not stream:
            return await reply.whole(run, request)
        return StreamingResponse(reply.sse(run, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def feedback(self, request):
        import anyio
        from fastapi.responses import JSONResponse

        try:
            body = await read_json(request)
            if self.service.feedback is None:
                raise ApiError(404, "feedback is not enabled on this server", code="feedback_disabled")
            row = await anyio.to_thread.run_sync(self.service.feedback.rate, body.get("id"), body.get("rating"),
                                                 body.get("correction"))
        except Exception as e:
            return error_response(e)
        return JSONResponse({"ok": True, **row})

    async def unknown(self, request):
        return error_response(ApiError(404, f"no such endpoint: {request.url.path}", code="not_found"))


class _Reply:
    """One chat completion on its way out: whole, or as server-sent events."""

    def __init__(self, cid: str, model: str, created: int, service):
        self.cid, self.model, self.created, self.service = cid, model, created, service

    async def record(self, answer) -> None:  # an fsync'ed SQLite write: kept off the event loop
        import anyio

        if self.service.feedback is not None:
            await anyio.to_thread.run_sync(self.service.feedback.record_answer, self.cid, answer, self.model,
                                           self.service.backend)

    async def whole(self, run, request):
        from fastapi.responses import JSONResponse

        answer = None
        try:
            async for ev in events(run, request):
                if ev.kind == "done":
                    answer = ev.answer
        except Exception as e:
            return error_response(e)
        if answer is None:  # the client went away
            return JSONResponse({"error": {"message": "cancelled", "type": "cancelled"}}, status_code=499)
        await self.record(answer)
        return JSONResponse(completion(self.cid, self.model, self.created, answer))

    async def sse(self, run, request):
        cid, model, created = self.cid, self.model, self.created
        yield chunk(cid, model, created, {"role": "assistant", "content": ""})
        streamed = False
        try:
            async for ev in events(run, request):
                if ev.kind == "token" and ev.text:
                    streamed = True
                    yield chunk(cid, model, created, {"content": ev.text})
                elif ev.kind == "done":  # other kinds (retrieved, pending) carry nothing to stream
                    a = ev.answer
                    if not streamed:  # declined before generation: the message is the answer
                        yield chunk(cid, model, created, {"content": a.text})
                    await self.record(a)
                    yield chunk(cid, model, created, {}, "stop", sources=sources(a), abstained=a.abstained,
                                query=a.query, answer=a.text)
                    yield "data: [DONE]\n\n"
        except Exception as e:  # headers are sent: the error travels as an SSE event
            yield f"data: {json.dumps(api_error(e).body(), ensure_ascii=False)}\n\n"
