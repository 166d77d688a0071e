from __future__ import annotations

import os
from pathlib import Path

import trio

from hived.agents.process import (
    Lines,
    read_lines,
)

AGENTS = Path(__file__).resolve().parent.parent / "examples" / "agents"
MISBEHAVE = str(AGENTS / "misbehave.py")


class Chunks(trio.abc.ReceiveStream):
    """A stream that returns the given chunks, one per receive, then the end."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        pass


async def collect(stream: trio.abc.ReceiveStream, limit: int = 1 << 20) -> list[Lines]:
    return [batch async for batch in read_lines(stream, limit=limit)]


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except FileNotFoundError:
        return True
    return stat_line[stat_line.rfind(b")") + 2 :].startswith(b"Z")


async def wait_gone(*pids: int, timeout_s: float = 5.0) -> None:
    """Wait until each process has ended: a pidfd turns readable when its process exits."""
    with trio.fail_after(timeout_s):
        for pid in pids:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
    assert all(gone(pid) for pid in pids)


# -- reading lines ---------------------------------------------------------------------------


async def test_lines_come_in_one_batch_per_chunk_across_chunk_boundaries() -> None:
    batches = await collect(Chunks(b"one\ntw", b"o\r\nthree\nfo", b"ur\n"))
    assert [b.lines for b in batches] == [["one"], ["two", "three"], ["four"]]
    assert all(not b.cut for b in batches)


async def test_invalid_utf8_is_replaced_not_fatal() -> None:
    batches = await collect(Chunks(b"\xff\xfe bad\nhalf \xc3\n"))
    assert batches[0].lines == ["\ufffd\ufffd bad", "half \ufffd"]


async def test_last_line_without_newline_is_given_at_the_end() -> None:
    batches = await collect(Chunks(b"whole\npart", b"ial"))
    assert [b.lines for b in batches] == [["whole"], ["partial"]]


async def test_a_chunk_without_a_complete_line_gives_no_batch() -> None:
    batches = await collect(Chunks(b"no newline ", b"yet", b"\n"))
    assert [b.lines for b in batches] == [["no newline yet"]]


async def test_a_long_line_is_cut_at_once_and_its_rest_dropped_up_to_the_newline() -> None:
    stream = Chunks(b"0123456789abc", b"more of it", b"and more", b"end\nnext\n")
    batches = await collect(stream, limit=10)
    # Cut as soon as the limit is passed (first chunk), not when its newline finally comes.
    assert batches[0] == Lines(["0123456789"], frozenset({0}))
    assert batches[1] == Lines(["next"])


async def test_each_line_says_the_offset_after_it_counted_from_where_the_stream_began() -> None:
    stream = Chunks(b"ab\r\nc", b"d\n", b"0123456789abc", b"tail\nlast")
    batches = [b async for b in read_lines(stream, limit=10, offset=100)]
    lines = [line for b in batches for line in b.lines]
    ends = [end for b in batches for end in b.ends]
    assert lines == ["ab", "cd", "0123456789", "last"]
    # "ab\r\n" ends at 104, "cd\n" at 107; the long line is cut where the limit was passed;
    # "last" has no newline and ends with the stream.
    assert ends == [104, 107, 120, 129]


async def test_a_long_line_inside_one_chunk_is_cut_and_the_next_line_kept() -> None:
    batches = await collect(Chunks(b"short\n" + b"x" * 25 + b"\nafter\n"), limit=10)
    assert batches == [Lines(["short", "x" * 10, "after"], frozenset({1}))]


async def test_a_line_exactly_at_the_limit_is_kept_whole() -> None:
    batches = await collect(Chunks(b"x" * 10 + b"\n"), limit=10)
    assert batches == [Lines(["x" * 10])]


async def test_memory_stays_bounded_when_a_line_never_ends() -> None:
    stream = Chunks(*[b"y" * 1000] * 200)
    batches = await collect(stream, limit=100)
    # One cut line; the other 199 kB were dropped as they came, never kept.
    assert batches == [Lines(["y" * 100], frozenset({0}))]
    assert stream.reads == 201
