"""Checks answered by a child process forked from the worker, so the event loop never shares a GIL with them.

Why not the check thread (``check_thread.py``) for ``POST /v1/check``: a thread in the worker's own
process trades the GIL with the event loop at every GEOS call, and measured at national scale that
trading cost about 270 µs of CPU a check, a quarter of the worker's time. Running checks on the
event loop itself avoided it but blocks the loop. A child process has its own GIL: the loop only
writes the request into a socket and reads the answer back, and the check runs undisturbed.

The child is forked after the index is loaded, so it shares the worker's memory page by page (copy on
write) instead of loading a second copy. It answers requests in arrival order, one at a time, and is
replaced when the worker's index is rebuilt (new data) or when it dies; the requests it was answering
when it died get ``CheckProcessLost``. It ends when the worker closes its socket, or when the worker dies.

Every check has a deadline (``deadline_s``, the ``check_deadline_s`` setting), counted from when the
worker sends it. Checks are answered in order, so the first one waiting is always the first due: if it
is still unanswered at its deadline the child is stuck (or stopped, or the site is beyond what the
limits let through) and cannot be trusted with the next one. It is killed, every check it held gets
``CheckOverdue`` (503 with Retry-After), and a new child is forked at once. /readyz reports the
replacements and the last reason.

Examples
--------
>>> import asyncio
>>> async def demo():
...     runner = CheckProcess(sum, tag="demo")
...     answer = await runner.run([1, 2, 3])
...     runner.close()
...     return answer
>>> asyncio.run(demo())
6
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import pickle
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from .check_thread import CheckOverdue

log = logging.getLogger("redline.check")
_LENGTH = struct.Struct("!I")
_READ_CHUNK = 1 << 20


class CheckProcessLost(RuntimeError):
    """The check process ended before it answered."""


def fork_available() -> bool:
    return hasattr(os, "fork") and hasattr(socket, "socketpair")


class CheckProcess:
    """One forked child running ``work(*args)`` for each ``await run(*args)``, first come first served.

    ``tag`` is whatever the child was forked with (the index snapshot), so the owner can tell when it
    is out of date. Use it from one event loop: the loop that first calls ``run``. ``on_failure(self,
    reason)`` is called once if the child dies or is killed for overrunning ``deadline_s``.
    """

    def __init__(self, work: Callable[..., Any], tag: object = None, *, deadline_s: float | None = None, on_failure: Callable[[CheckProcess, str], None] | None = None) -> None:
        self.tag = tag
        self.deadline_s = deadline_s
        self.failure: str | None = None
        self._on_failure = on_failure
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[tuple[asyncio.Future, float]] = collections.deque()  # (answer, sent at)
        self._watchdog: asyncio.TimerHandle | None = None
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._closed = False
        self.exited = threading.Event()
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError as err:  # out of memory or processes: this check cannot be answered now
            ours.close()
            theirs.close()
            raise CheckProcessLost(f"a check process could not be started: {err.strerror or err}") from None
        if pid == 0:  # the child: answer requests until the worker goes away, then leave at once
            status = 0
            try:
                ours.close()
                _close_inherited_sockets(keep=theirs.fileno())
                _serve(theirs, work)
            except BaseException:  # noqa: BLE001 - nothing in the child may return into the worker's stack
                status = 1
            finally:
                os._exit(status)
        theirs.close()
        ours.setblocking(False)
        self.pid = pid
        self._sock = ours
        threading.Thread(target=self._reap, name=f"redline-check-reaper-{pid}", daemon=True).start()

    @property
    def alive(self) -> bool:
        return not self._closed and not self.exited.is_set()

    @property
    def backlog(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def run(self, *args: Any) -> Any:
        """``work(*args)`` in the child; its exception is raised here, ``CheckProcessLost`` if it died."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
            loop.add_reader(self._sock.fileno(), self._readable)
        if self._closed:
            raise CheckProcessLost("the check process has been closed")
        frame = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
        future = loop.create_future()
        self._pending.append((future, loop.time()))
        self._watch()
        self._send(_LENGTH.pack(len(frame)) + frame)
        return await future

    def kill(self, reason: str) -> None:
        """End the child now (SIGKILL, which also ends a stopped one); what it held gets ``CheckOverdue``."""
        if self.exited.is_set():
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._fail(reason, lambda first: CheckOverdue(self.deadline_s or 0, reason if first else f"{reason}; this check was waiting behind it: send it again"))

    def close(self) -> None:
        """Stop taking requests; the child answers those already sent, then exits."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if not self._pending:
            self._release()

    def abandon(self) -> None:
        """Close the socket without touching the event loop it was used from (another, maybe closed,
        loop: a test client's); the child sees the socket close and exits."""
        self._closed = True
        self._sock.close()

    # -- the worker's side of the socket ---------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if not self._outbox:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost()
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.loop.add_writer(self._sock.fileno(), self._writable)
        self._outbox += data

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._outbox)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self._outbox[:sent]
        if not self._outbox:
            self.loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(_READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._lost()
                return
            self._inbox += chunk
            if len(chunk) < _READ_CHUNK:
                break
        while len(self._inbox) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._inbox)
            if len(self._inbox) < _LENGTH.size + size:
                break
            kind, value = pickle.loads(memoryview(self._inbox)[_LENGTH.size : _LENGTH.size + size])
            del self._inbox[: _LENGTH.size + size]
            future, _ = self._pending.popleft()
            if future.cancelled():  # its caller went away; the answer is dropped
                continue
            if kind == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)
        if self._closed and not self._pending:
            self._release()

    def _lost(self) -> None:
        """The child is gone: whoever waits gets ``CheckProcessLost``."""
        if self._closed and not self._pending:  # closed by the worker and done: an orderly end
            self._release()
            return
        self._fail(f"the check process {self.pid} ended unexpectedly", lambda first: CheckProcessLost(f"the check process {self.pid} stopped before it answered"))

    def _fail(self, reason: str, error: Callable[[bool], Exception]) -> None:
        if self.failure is not None:
            return
        self.failure = reason
        log.error("%s; a new check process takes over", reason)
        self._closed = True
        pending, self._pending = self._pending, collections.deque()
        for i, (future, _) in enumerate(pending):
            if not future.done():
                future.set_exception(error(i == 0))
        self._release()
        if self._on_failure is not None:
            self._on_failure(self, reason)

    def _watch(self) -> None:
        """Wake at the deadline of the first check waiting (the one being worked on), unless a wake-up
        is already set: one timer, moved on when it fires early, costs less than one per check."""
        if self._watchdog is None and self.deadline_s is not None and self._pending and self.loop is not None:
            self._watchdog = self.loop.call_at(self._pending[0][1] + self.deadline_s, self._overdue)

    def _overdue(self) -> None:
        self._watchdog = None
        if not self._pending or self.failure is not None:
            return
        if self.loop.time() < self._pending[0][1] + self.deadline_s:  # answered meanwhile: the next one's turn
            self._watch()
            return
        self.kill(f"the check process {self.pid} did not answer a check within the {self.deadline_s:g} s deadline, so it was stopped and replaced; send the check again")

    def _release(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._sock.fileno() == -1:  # released already (closed, then killed at shutdown)
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self._sock.fileno())
            self.loop.remove_writer(self._sock.fileno())
        self._sock.close()

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.exited.set()


# -- the child ------------------------------------------------------------------------------------


def _close_inherited_sockets(keep: int) -> None:
    """Close the worker's sockets in the child: its listening socket and its clients' connections.

    A connection stays open while any process holds it, so a client whose connection the worker
    closed would otherwise wait for an end that never comes while this child lives; and a database
    connection must never be used from two processes. Files (PROJ's database, say) stay open.
    """
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: look at the usual range
        descriptors = list(range(3, 1024))
    for fd in descriptors:
        if fd <= 2 or fd == keep:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:  # already closed (the listing's own descriptor, say)
            pass


def _serve(sock: socket.socket, work: Callable[..., Any]) -> None:
    """The child's whole life: read a request, answer it, until the worker closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the worker decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.freeze()  # what was forked is long-lived: collections need not walk it (nor copy its pages)
    sock.setblocking(True)
    reader = sock.makefile("rb")
    while True:
        header = reader.read(_LENGTH.size)
        if len(header) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack(header)
        args = pickle.loads(reader.read(size))
        try:
            reply = ("ok", work(*args))
        except Exception as err:  # handed back to the request, which answers it as the worker would
            reply = ("error", _portable(err))
        frame = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(_LENGTH.pack(len(frame)) + frame)


def _portable(err: Exception) -> Exception:
    """The exception itself when it survives pickling, else a plain error that says what it was."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any failure to round-trip means: describe it instead
        return RuntimeError(f"{type(err).__name__}: {err}")


class CheckProcessRunner:
    """The worker's check processes: forked on first use, each replaced when the index or the loop changes,
    and at once when one dies or is killed for overrunning ``deadline_s``.

    With ``size`` > 1 each check goes to the process with the fewest checks waiting, so one worker's
    event loop can keep several cores busy from one index in memory.
    """

    def __init__(self, make_work: Callable[[object], Callable[..., Any]], size: int = 1, deadline_s: float | None = None) -> None:
        if size < 1:
            raise ValueError("a check process pool needs at least one process")
        self._make_work = make_work
        self._slots: list[CheckProcess | None] = [None] * size
        self.deadline_s = deadline_s
        self.restarts = 0  # processes replaced because they died or were killed
        self.last_failure: dict | None = None
        self._closing = False

    @property
    def pids(self) -> list[int]:
        """The processes answering checks now (none before the first check)."""
        return [process.pid for process in self._slots if process is not None and process.alive]

    def processes(self) -> list[CheckProcess]:
        return [process for process in self._slots if process is not None]

    def _fork(self, tag: object) -> CheckProcess:
        return CheckProcess(self._make_work(tag), tag, deadline_s=self.deadline_s, on_failure=self._failed)

    async def run(self, tag: object, *args: Any) -> Any:
        """``work(*args)`` in a check process forked with ``tag`` (the index snapshot it must answer from)."""
        loop = asyncio.get_running_loop()
        chosen: CheckProcess | None = None
        for i, process in enumerate(self._slots):
            if process is None or not process.alive or process.tag is not tag or (process.loop is not None and process.loop is not loop):
                if process is not None:
                    if not process.alive and process.failure is None:  # exited before its socket said so
                        self._record(process, f"the check process {process.pid} ended unexpectedly")
                    self._retire(process, loop)
                process = self._slots[i] = self._fork(tag)
            if chosen is None or process.backlog < chosen.backlog:
                chosen = process
        return await chosen.run(*args)

    def _record(self, process: CheckProcess, reason: str) -> None:
        self.restarts += 1
        self.last_failure = {"pid": process.pid, "reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _failed(self, process: CheckProcess, reason: str) -> None:
        """A process died or was killed: count it, and fork its successor now, not at the next check."""
        self._record(process, reason)
        if self._closing:
            return
        for i, slot in enumerate(self._slots):
            if slot is process:
                try:
                    self._slots[i] = self._fork(process.tag)
                except CheckProcessLost:  # cannot fork now: the next check tries again
                    self._slots[i] = None

    @staticmethod
    def _retire(process: CheckProcess, loop: asyncio.AbstractEventLoop) -> None:
        if process.loop is None or process.loop is loop:
            process.close()
        else:
            process.abandon()

    def close(self) -> list[CheckProcess]:
        """Close every check process (each finishes what it was sent); wait on their ``exited`` events,
        and ``kill`` any that has not ended by its deadline."""
        self._closing = True
        closing = [process for process in self._slots if process is not None]
        self._slots = [None] * len(self._slots)
        for process in closing:
            process.close()
        return closing
