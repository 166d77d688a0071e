"""A subscription: the events of one topic as an async iterator, resumable by ``seq``."""

from __future__ import annotations

from typing import Any, Final

import attrs
import trio

from hived.client.errors import FellBehind

SUBSCRIPTION_BUFFER: Final = 100_000
"""Events buffered per subscription; past it the subscription ends with FellBehind."""


@attrs.define(eq=False)
class Subscription:
    """Events of one topic, as an async iterator; resumes across reconnects by ``seq``.

    It ends quietly after :meth:`Client.unsubscribe` or when the client is closed; any other
    end (auth refused, closed by hived, a drop without ``reconnect``, :class:`FellBehind`) is
    raised by :meth:`receive` and the iterator once the events buffered before it are read.
    """

    topic: str
    last_seq: int | None
    """The seq of the last event handed to the caller (or where it resumes from)."""
    recovered: bool = True
    """False once the server said its history no longer reached where we resumed from."""
    epoch: int | None = None
    """The daemon run that ``last_seq`` counts in (the subscribe result's ``epoch``)."""
    error: BaseException | None = attrs.field(default=None, init=False)
    """Why the subscription ended, once it has (None while it runs, or after unsubscribe)."""
    _send: trio.MemorySendChannel[dict[str, Any]] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[dict[str, Any]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(SUBSCRIPTION_BUFFER)

    def _deliver(self, event: dict[str, Any]) -> bool:
        """Buffer ``event`` unless already seen; False if the buffer was full (it has ended)."""
        seq = event.get("seq")
        if not isinstance(seq, int) or (self.last_seq is not None and seq <= self.last_seq):
            return True
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._end(FellBehind(self.topic, self.last_seq))
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # it has ended already: nobody is reading
        self.last_seq = seq
        return True

    def _end(self, error: BaseException | None) -> None:
        if self.error is None:
            self.error = error
        self._send.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> dict[str, Any]:
        """The next event (``{"type": "event", "topic", "seq", "ts", "kind", ...}``).

        Raises why the subscription ended, or :class:`trio.EndOfChannel` after unsubscribe.
        """
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.error is not None:
                raise self.error from None
            raise
