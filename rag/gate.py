"""One generation at a time for the whole process (chat UI and HTTP API alike), a bounded wait list,
and a watchdog so that no answer can hold the language model forever.

The model has one context (llama.cpp is not re-entrant), so every answer takes the single slot.
Callers wait in arrival order; when the wait list is full a caller is refused at once with an
estimate of when to retry (HTTP 429), and one that waited longer than `max_wait` gives up (503).

An answer runs in a worker thread that holds the slot; the caller reads its events against two
clocks: no event for `stall` seconds, or more than `budget` seconds in all, ends the request with
GenerationTimeout. Cancelling (timeout, client gone, stop button) tells the worker to stop at its
next event, which closes the model's token stream. A worker wedged inside one call cannot be
interrupted from Python: after `grace` seconds the slot is released anyway and the thread is
abandoned (it drops its events when it resumes, and the backends' own lock keeps it from running
beside the next answer, which then times out cleanly instead of hanging).
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from typing import Callable, Iterable, Iterator

from .errors import GenerationTimeout, ServiceBusy

log = logging.getLogger(__name__)

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Slot:
    """The held generation slot; release() is idempotent."""

    def __init__(self, gate: "GenerationGate"):
        self.gate = gate
        self.t0 = time.monotonic()
        self.released = False

    def release(self) -> None:
        self.gate._release(self)


class GenerationGate:
    def __init__(self, max_waiting: int = 16, stall: float = 60.0, budget: float = 300.0,
                 max_wait: float | None = None, grace: float = 2.0):
        self.max_waiting = max_waiting
        self.stall = stall
        self.budget = budget
        self.max_wait = budget if max_wait is None else max_wait
        self.grace = grace
        self.service_s = 10.0  # running estimate of one answer's duration, for Retry-After
        self.stats = {"served": 0, "refused": 0, "timeouts": 0, "abandoned": 0, "cancelled": 0}
        self._cond = threading.Condition()
        self._holder: Slot | None = None
        self._queue: deque[int] = deque()
        self._ids = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return self._holder is not None

    def retry_after(self, position: int | None = None) -> int:
        position = len(self._queue) if position is None else position
        return max(1, math.ceil(self.service_s * (position + 1)))

    def check_room(self) -> None:
        """Refuse at once, without waiting, when the wait list is full, or when (once a few answers
        have been timed) the expected wait is longer than `max_wait`: better a 429 now than a 503 later."""
        if self._holder is None:
            return
        n = len(self._queue)
        if n >= self.max_waiting or (self.stats["served"] >= 3 and (n + 1) * self.service_s > self.max_wait):
            self.stats["refused"] += 1
            raise ServiceBusy(f"the generation queue is full ({n} waiting, about {self.retry_after()} s); "
                              f"try again later", self.retry_after(), full=True)

    def acquire(self, timeout: float | None = None, bounded: bool = True,
                cancelled: threading.Event | None = None) -> Slot:
        """Wait for the slot in arrival order. `bounded=False` skips the wait-list limit (the chat UI
        is already bounded by gradio's own queue)."""
        timeout = self.max_wait if timeout is None else timeout
        with self._cond:
            if bounded:
                self.check_room()
            me = next(self._ids)
            self._queue.append(me)
            deadline = time.monotonic() + timeout
            try:
                while self._holder is not None or self._queue[0] != me:
                    if cancelled is not None and cancelled.is_set():
                        self.stats["cancelled"] += 1
                        raise ServiceBusy("cancelled while waiting for the language model", 1, full=False)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ServiceBusy(f"waited {timeout:.0f} s for the language model; try again later",
                                          self.retry_after(), full=False)
                    self._cond.wait(min(left, 0.25))
                self._holder = Slot(self)
                return self._holder
            finally:
                self._queue.remove(me)
                self._cond.notify_all()

    def _release(self, slot: Slot) -> None:
        with self._cond:
            if slot.released:
                return
            slot.released = True
            if self._holder is slot:
                self._holder = None
                self.stats["served"] += 1
                self.service_s = 0.8 * self.service_s + 0.2 * (time.monotonic() - slot.t0)
            self._cond.notify_all()

    def run(self, slot: Slot, factory: Callable[[], Iterable]) -> "Run":
        return Run(self, slot, factory)

    def stream(self, factory: Callable[[], Iterable], bounded: bool = True) -> Iterator:
        """Acquire, run and yield the events; closing this iterator cancels the answer."""
        run = self.run(self.acquire(bounded=bounded), factory)
        try:
            yield from run
        finally:
            run.cancel()


class Run:
    """The events of one answer, produced by a worker thread that holds `slot` until it ends."""

    def __init__(self, gate: GenerationGate, slot: Slot, factory: Callable[[], Iterable]):
        self.gate, self.slot = gate, slot
        self.stall, self.budget = gate.stall, gate.budget
        self.t0 = self.last = time.monotonic()
        self._q: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._ended = False
        # The hard cap does not depend on anyone reading: a client that vanished before its response
        # started never calls next(), yet the slot must come back within the budget.
        self._deadline = threading.Timer(self.budget + gate.grace, self._expire)
        self._deadline.daemon = True
        self._deadline.start()
        self._thread = threading.Thread(target=self._work, args=(factory,), name="rag-generation", daemon=True)
        self._thread.start()

    def _work(self, factory) -> None:
        events = None
        try:
            events = iter(factory())
            for ev in events:
                if self._cancel.is_set():
                    break
                self._q.put(ev)
        except BaseException as e:  # handed to the reader, who raises it
            self._q.put(_Failure(e))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                try:
                    close()  # stops the model's token stream and releases its lock
                except Exception:  # pragma: no cover - a backend failing to close must not keep the slot
                    log.exception("closing the token stream failed")
            self._deadline.cancel()
            self._finished.set()
            self._q.put(_END)
            self.slot.release()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        """Stop the worker at its next event; release the slot after `grace` s if it is wedged."""
        if self._cancel.is_set() or self._finished.is_set():
            return
        self._cancel.set()
        timer = threading.Timer(self.gate.grace, self._abandon_if_stuck)
        timer.daemon = True
        timer.start()

    def _expire(self) -> None:
        if not self._finished.is_set():
            self.gate.stats["timeouts"] += 1
            self._cancel.set()
            self._abandon_if_stuck()

    def _abandon_if_stuck(self) -> None:
        if not self._finished.is_set() and not self.slot.released:
            self.gate.stats["abandoned"] += 1
            log.warning("a generation did not stop within %.1f s of being cancelled: slot released, "
                        "thread abandoned", self.gate.grace)
            self.slot.release()

    def _timeout(self, stalled: bool) -> None:
        self.gate.stats["timeouts"] += 1
        self.cancel()
        self._finished.wait(self.gate.grace)
        if not self._finished.is_set():
            self._abandon_if_stuck()
        self._ended = True
        what = (f"the language model produced nothing for {self.stall:g} s" if stalled
                else f"the answer ran over its {self.budget:g} s time budget")
        raise GenerationTimeout(f"{what}; the request was stopped and the model freed for the next one")

    def next(self, poll: float | None = None):
        """The next event, or None when `poll` seconds passed without one (the clocks keep running).
        Raises StopIteration at the end, the worker's exception, or GenerationTimeout."""
        if self._ended:
            raise StopIteration
        while True:
            now = time.monotonic()
            stall_left, budget_left = self.last + self.stall - now, self.t0 + self.budget - now
            if stall_left <= 0 or budget_left <= 0:
                self._timeout(stalled=stall_left <= 0)
            wait = min(stall_left, budget_left, poll if poll is not None else math.inf)
            try:
                item = self._q.get(timeout=max(wait, 0.001))
            except queue.Empty:
                if poll is not None:
                    return None
                continue
            if item is _END:
                self._ended = True
                raise StopIteration
            if isinstance(item, _Failure):
                self._ended = True
                raise item.exc
            self.last = time.monotonic()
            return item

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()
