"""One thread per process that runs checks in arrival order, off the event loop.

It answers ``/gis/{team}``, and ``POST /v1/check`` where check processes are off or impossible
(``REDLINE_CHECK_PROCESS=false``, no ``fork``, the live fallback): see ``check_process.py`` for why
the hot path moved to forked processes (this thread trades the GIL with the event loop).

Why not ``anyio.to_thread`` with a capacity limiter: its hand-off (a cancel scope, a limiter token,
a worker pool) cost about 100 µs a check, and a second check thread in the same process only
queues on the GIL while the two threads trade it at every GEOS call. A plain queue and one thread
cost about 25 µs a hand-off and keep checks first-come-first-served, so a slow site never lets
later ones overtake it and starve.

A thread cannot be stopped from outside, so a check that overruns its deadline is abandoned, not
ended: its caller gets ``CheckOverdue`` and the checks queued behind it wait or time out in turn.
The limits in ``constraints.site.SiteLimits`` keep any one check short; ``busy_for`` lets /readyz
say when the thread is stuck anyway.

Examples
--------
>>> import asyncio
>>> runner = CheckThread(deadline_s=5)
>>> asyncio.run(runner.run(sum, [1, 2, 3]))
6
>>> runner.stop()
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

_STOP = object()


class CheckOverdue(TimeoutError):
    """A check did not finish within its deadline and was abandoned."""

    def __init__(self, deadline_s: float, detail: str = "") -> None:
        super().__init__(detail or f"the check did not finish within its {deadline_s:g} s deadline and was abandoned; send it again, or simplify the site if it keeps happening")
        self.deadline_s = deadline_s


class CheckThread:
    """Runs callables on one daemon thread, first come first served; ``await run(fn, *args)``.

    ``deadline_s`` (None: none) is how long a caller waits, queueing included, before ``CheckOverdue``.
    """

    def __init__(self, name: str = "redline-check", deadline_s: float | None = None) -> None:
        self._name = name
        self.deadline_s = deadline_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy_since: float | None = None

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
        if self.deadline_s is None:
            return await future
        try:
            return await asyncio.wait_for(future, self.deadline_s)  # cancelled on timeout: skipped if not started
        except TimeoutError:
            raise CheckOverdue(self.deadline_s) from None

    @property
    def busy_for(self) -> float:
        """Seconds the thread has been on its current check (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

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
            self._busy_since = time.monotonic()
            try:
                result, error = fn(*args), None
            except BaseException as err:  # handed to the awaiting request, which answers it
                result, error = None, err
            finally:
                self._busy_since = None
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
