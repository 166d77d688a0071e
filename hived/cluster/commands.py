"""Acting anywhere: requests on another node's sessions, through its command stream.

How it works: :meth:`Commands.ask` appends a :class:`~hived.cluster.envelope.Command` to the
owning node's stream and waits, up to ``request_timeout_s``, for the answer on a list of its
own. Each node reads its own stream in the consumer group ``hived`` (:meth:`Commands.serve`):
it checks the asker's role again (the request is refused as it would be on a connection of
that role), runs the request through the same handlers a local client reaches, pushes the
answer and acknowledges the entry. Entries delivered before a crash and never acknowledged are
read again at the next start; those past their deadline are acknowledged unanswered (nobody
waits for them any more). An engine that is down makes ``ask`` fail at once with a clear
error, and ``serve`` retry.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import coredis.exceptions
import trio
from coredis import PureToken

from hived.cluster.engine import ENGINE_ERRORS, Engine, retry_delay_s
from hived.cluster.envelope import Command, EnvelopeError, Reply
from hived.cluster.keys import COMMAND_GROUP, Keys
from hived.core.auth import CLIENT_CHANNEL
from hived.core.errors import ProtocolError, RequestError
from hived.core.protocol import Caller, Request, forbidden_reason, parse_frame, request_frame

log = logging.getLogger(__name__)

Runner = Callable[[Request, Caller], Awaitable[Any]]

FORWARDED_CONNECTION: Final = -1
"""The ``Caller.connection`` of a request that came from another node."""
READ_BLOCK_MS: Final = 1000
READ_COUNT: Final = 16
PENDING_MAX: Final = 1000
"""Unacknowledged entries taken up at a start (a crash left them; older ones are past their
deadline anyway)."""
STREAM_MAXLEN: Final = 10_000
"""A command stream keeps about this many entries (acknowledged ones are not needed)."""
REPLY_TTL_MS: Final = 60_000
"""An answer nobody took is dropped after this long."""


class Commands:
    """This node's command stream, and the way to other nodes' streams."""

    def __init__(
        self, engine: Engine, keys: Keys, node: str, timeout_s: float, run: Runner
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._node = node
        self._timeout_s = timeout_s
        self._run = run
        self.answered = 0
        """Forwarded requests this node ran."""

    async def ask(self, node: str, request: Request, caller: Caller) -> Any:
        """Run ``request`` on ``node`` as ``caller``; its result, or its RequestError."""
        command_id = secrets.token_hex(12)
        deadline_ms = int(time.time() * 1000 + self._timeout_s * 1000)
        command = Command(
            id=command_id,
            origin=self._node,
            frame=request_frame(request),
            token_name=caller.token_name,
            role=caller.role,
            deadline_ms=deadline_ms,
        )
        reply_key = self._keys.reply(command_id)
        try:
            await self._engine.xadd(
                self._keys.commands(node),
                {"c": command.encode().decode()},
                trim_strategy=PureToken.MAXLEN,
                trim_operator=PureToken.APPROXIMATELY,
                threshold=STREAM_MAXLEN,
            )
            raw = None
            with trio.move_on_after(self._timeout_s):
                while raw is None:
                    popped = await self._engine.blpop([reply_key], timeout=1)
                    raw = None if popped is None else popped[1]
        except ENGINE_ERRORS as exc:
            raise RequestError(
                "internal", f"{request.type}: the cluster engine does not answer ({exc})"
            ) from None
        if raw is None:
            raise RequestError(
                "internal",
                f"{request.type}: node {node} did not answer within "
                f"cluster.request_timeout_s={self._timeout_s:g}",
            )
        try:
            reply = Reply.decode(raw)
        except EnvelopeError as exc:
            raise RequestError("internal", f"{request.type}: node {node}: {exc}") from None
        if reply.code is not None:
            raise RequestError(reply.code, reply.message)
        return reply.result

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer the requests other nodes forward here, until cancelled."""
        task_status.started()
        stream = self._keys.commands(self._node)
        failures = 0
        pending = True
        """Read this consumer's unacknowledged entries first (a crash left them)."""
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    if failures or pending:
                        await self._ensure_group(stream)
                    got = await self._engine.xreadgroup(
                        COMMAND_GROUP,
                        self._node,
                        streams={stream: "0" if pending else ">"},
                        count=PENDING_MAX if pending else READ_COUNT,
                        block=None if pending else READ_BLOCK_MS,
                    )
                except ENGINE_ERRORS as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("cluster: cannot read the command stream (%s)", exc)
                    await trio.sleep(retry_delay_s(failures))
                    continue
                failures = 0
                for entry in (got or {}).get(stream, ()):
                    raw = str(entry.field_values.get("c", ""))
                    nursery.start_soon(self._answer, stream, str(entry.identifier), raw)
                pending = False

    async def _ensure_group(self, stream: str) -> None:
        # Made before when the engine kept it while this node could not reach it.
        with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
            # From the stream's start: a command sent before this node made its group is still
            # read (and dropped if past its deadline).
            await self._engine.xgroup_create(stream, COMMAND_GROUP, "0", mkstream=True)

    async def _answer(self, stream: str, entry_id: str, raw: str) -> None:
        try:
            command = Command.decode(raw)
        except EnvelopeError as exc:
            log.warning("cluster: dropped a bad entry %s of %s: %s", entry_id, stream, exc)
            await self._ack(stream, entry_id)
            return
        if command.deadline_ms < time.time() * 1000:
            log.info("cluster: command %s from %s is past its deadline", command.id, command.origin)
            await self._ack(stream, entry_id)
            return
        reply = await self._reply_to(command)
        try:
            key = self._keys.reply(command.id)
            await self._engine.lpush(key, [reply.encode().decode()])
            await self._engine.pexpire(key, REPLY_TTL_MS)
        except ENGINE_ERRORS as exc:
            log.warning("cluster: cannot answer %s from %s: %s", command.id, command.origin, exc)
            return
        self.answered += 1
        await self._ack(stream, entry_id)

    async def _reply_to(self, command: Command) -> Reply:
        try:
            request = parse_frame(command.frame)
        except ProtocolError as exc:
            return Reply(code=exc.code, message=exc.message)
        refused = forbidden_reason(request.type, command.role, CLIENT_CHANNEL)
        if refused is not None:
            return Reply(code="forbidden", message=refused)
        caller = Caller(
            FORWARDED_CONNECTION, f"{command.token_name}@{command.origin}", command.role
        )
        try:
            return Reply(result=await self._run(request, caller))
        except RequestError as exc:
            return Reply(code=exc.code, message=exc.message)
        except Exception:
            log.exception("cluster: %s from %s failed", request.type, command.origin)
            message = f"{request.type} failed inside hived on node {self._node}"
            return Reply(code="internal", message=message)

    async def _ack(self, stream: str, entry_id: str) -> None:
        try:
            await self._engine.xack(stream, COMMAND_GROUP, [entry_id])
        except ENGINE_ERRORS as exc:
            log.warning("cluster: cannot acknowledge %s: %s", entry_id, exc)
