"""One thread per process that runs checks in arrival order, off the event loop.

It answers ``/gis/{team}``, and ``POST /v1/check`` where check processes are off or impossible
(``REDLINE_CHECK_PROCESS=false``, no ``fork``, the live fallback): see ``check_process.py`` for why
the hot path moved to forked processes (this thread trades the GIL with the event loop).

Why not ``anyio.to_thread`` with a capacity limiter: its hand-off (a cancel scope, a limiter token,
a worker pool) cost about 100 µs a check, and a second check thread in the same process only
queues on the GIL while the two threads trade it at every GEOS call. A plain queue and one thread
cost about 25 µs a hand-off and keep checks first-come-first-served, so a slow site never lets
later ones overtake it and starve.

Examples
--------
>>> import asyncio
>>> runner = CheckThread()
>>> asyncio.run(runner.run(sum, [1, 2, 3]))
6
>>> runner.stop()
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class CheckThread:
    """Runs callables on one daemon thread, first come first served; ``await run(fn, *args)``."""

    def __init__(self, name: str = "redline-check") -> None:
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                    self._thread.start()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The result of ``fn(*args)`` run on the check thread; its exception is raised here."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return await future

    @property
    def backlog(self) -> int:
        """Checks waiting for the thread (not counting the one running)."""
        return self._queue.qsize()

    def stop(self, timeout: float = 5.0) -> None:
        """Let the queued checks finish, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)
        self._thread = None

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            loop, future, fn, args = job
            if future.cancelled():  # the caller went away while it waited: skip the work
                continue
            try:
                result, error = fn(*args), None
            except BaseException as err:  # handed to the awaiting request, which answers it
                result, error = None, err
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop has closed (shutdown): nobody is waiting
                pass


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
