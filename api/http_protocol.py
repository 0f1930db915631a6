"""uvicorn's httptools protocol, with the writes of one turn of the event loop sent together.

uvicorn writes a response's status line and headers as soon as the app starts the response, and the
body in a second write. Over a real network the two usually share a packet anyway, but each write is
a system call, and on loopback (a proxy on the same machine, the benchmark) each one wakes the client
too, which then finds only headers and sleeps again. Measured with 2 workers at national scale, one
send per answer instead of two took from 1,490-1,540 to 1,710-1,960 checks/s, back to back.

``CoalescedWrites`` holds what is written during one turn of the loop and sends it all at the start of
the next (``call_soon``), before the loop waits for anything, so nothing is held across a wait.

Examples
--------
>>> import asyncio
>>> class Recorder:
...     def __init__(self): self.sent = []
...     def write(self, data): self.sent.append(data)
...     def is_closing(self): return False
>>> async def demo():
...     real = Recorder()
...     transport = CoalescedWrites(real, asyncio.get_running_loop())
...     transport.write(b"HTTP/1.1 200 OK\\r\\n\\r\\n")
...     transport.write(b"{}")
...     await asyncio.sleep(0)
...     return real.sent
>>> asyncio.run(demo())
[b'HTTP/1.1 200 OK\\r\\n\\r\\n{}']
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
except ImportError:  # httptools missing: uvicorn picks its own (h11), unchanged
    _HttpToolsProtocol = None


class CoalescedWrites:
    """A transport whose writes within one turn of the event loop leave in one send."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data) if not isinstance(data, bytes) else data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is held now."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else (pause_reading, get_extra_info, ...) as is
        return getattr(self._transport, name)


if _HttpToolsProtocol is not None:

    class HttpToolsProtocol(_HttpToolsProtocol):
        """uvicorn's httptools protocol on a ``CoalescedWrites`` transport."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescedWrites(transport, self.loop))

else:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None


def http_protocol() -> type[asyncio.Protocol] | str:
    """What to give uvicorn as ``http=``: the coalescing protocol, or "auto" without httptools."""
    return HttpToolsProtocol if HttpToolsProtocol is not None else "auto"
