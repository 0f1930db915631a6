"""The served HTTP protocol sends what one turn of the event loop writes in one go, and holds nothing longer."""

from __future__ import annotations

import asyncio

from api.http_protocol import CoalescedWrites


class Recorder:
    """A transport that records each send."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data):
        self.sent.append(bytes(data))

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def test_headers_and_body_written_in_one_turn_leave_together():
    async def scenario():
        real = Recorder()
        transport = CoalescedWrites(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(bytearray(b"{}"))
        assert real.sent == []  # held until the turn ends
        assert transport.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        return real.sent

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_nothing_is_held_across_a_wait():
    async def scenario():
        real = Recorder()
        transport = CoalescedWrites(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0.01)  # a streaming response waiting for its next chunk
        first = list(real.sent)
        transport.write(b"2\r\n{}\r\n")
        transport.write(b"0\r\n\r\n")
        await asyncio.sleep(0)
        return first, real.sent

    first, sent = asyncio.run(scenario())
    assert first == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert sent[1:] == [b"2\r\n{}\r\n0\r\n\r\n"]


def test_closing_sends_what_is_held_first_and_aborting_drops_it():
    async def scenario():
        loop = asyncio.get_running_loop()
        closed, aborted = Recorder(), Recorder()
        a, b = CoalescedWrites(closed, loop), CoalescedWrites(aborted, loop)
        a.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        a.close()
        b.write(b"HTTP/1.1 200 OK\r\n")
        b.abort()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(scenario())
    assert closed.sent == [b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"] and closed.closed
    assert aborted.sent == [] and aborted.aborted


def test_everything_else_is_the_transport_underneath():
    async def scenario():
        transport = CoalescedWrites(Recorder(), asyncio.get_running_loop())
        return transport.get_extra_info("peername"), transport.is_closing()

    assert asyncio.run(scenario()) == (("127.0.0.1", 5000), False)
