"""PrefixedStream (hived/server/stream.py): what the WebSocket library's reader reads."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from hived.server.stream import PrefixedStream


@contextlib.asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    a, b = trio.socket.socketpair()
    async with trio.SocketStream(a) as left, trio.SocketStream(b) as right:
        yield left, right


async def test_prefixed_stream_yields_the_prefix_then_the_socket_then_eof() -> None:
    async with socket_pair() as (left, right):
        stream = PrefixedStream(b"head+rest", right)
        assert await stream.receive_some(5) == b"head+"
        assert await stream.receive_some() == b"rest"
        await left.send_all(b"frames")
        assert await stream.receive_some(100) == b"frames"
        await left.send_eof()
        assert await stream.receive_some() == b""


async def test_prefixed_stream_reads_a_stream_that_is_not_a_socket() -> None:
    left, right = trio.testing.memory_stream_pair()
    stream = PrefixedStream(b"", right)
    await left.send_all(b"data")
    assert await stream.receive_some() == b"data"


async def test_prefixed_stream_readers_take_turns(nursery: trio.Nursery) -> None:
    async with socket_pair() as (left, right):
        stream = PrefixedStream(b"", right)
        got: list[bytes | bytearray] = []

        async def read() -> None:
            got.append(await stream.receive_some())

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(read)  # would be refused by trio (two waits on one socket) but waits
        await trio.testing.wait_all_tasks_blocked()
        await left.send_all(b"first")
        await trio.testing.wait_all_tasks_blocked()
        await left.send_all(b"second")
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"first", b"second"]


async def test_prefixed_stream_read_fails_when_the_socket_is_closed_under_it(
    nursery: trio.Nursery,
) -> None:
    async with socket_pair() as (_, right):
        stream = PrefixedStream(b"", right)
        failed: list[BaseException] = []

        async def read() -> None:
            try:
                await stream.receive_some()
            except trio.ClosedResourceError as exc:
                failed.append(exc)

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await trio.aclose_forcefully(right)
        await trio.testing.wait_all_tasks_blocked()
        assert len(failed) == 1
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


async def test_prefixed_stream_read_of_a_reset_connection_is_broken() -> None:
    async with socket_pair() as (left, right):
        stream = PrefixedStream(b"", right)
        left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await right.send_all(b"unread")  # closing with unread data resets the connection
        await left.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
