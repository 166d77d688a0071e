"""Key names in the engine, stream entry ids, and the mirror's Lua script with its answers.

How it works: every topic a node publishes is one stream whose entry ids are ``<seq>-0``, so a
reader resumes "after seq N" with ``XREAD … N-0`` and the seam between a replay and live reading
is exact. Beside each stream a small hash (its *meta*) holds ``top`` (the last seq in the
stream), ``epoch`` (a random word chosen when the stream was made) and ``node`` (the owner).
:data:`MIRROR_SCRIPT` appends a batch atomically: an entry is taken only when its seq is
``top + 1`` ("duplicate" for ≤ top, "gap" otherwise), so an event sent twice — a retry after a
lost answer, a catch-up racing live mirroring — is never doubled. The per-node ``sessions``
stream is *monotonic* instead: seqs only grow, as that topic also holds other nodes' events,
which are not mirrored back. A stream that is new (no meta: first use, or the engine lost its
data) takes any first seq only when the caller says that seq is the oldest it keeps.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

import attrs

SESSIONS_TOPIC: Final = "sessions"


class Mode(enum.StrEnum):
    """How :data:`MIRROR_SCRIPT` checks a seq against the stream's top."""

    STRICT = "strict"
    """Only ``top + 1``."""
    MONOTONIC = "monotonic"
    """Anything above ``top``."""


class Status(enum.StrEnum):
    """The first thing that stopped a batch, or ``ok``."""

    OK = "ok"
    DUPLICATE = "duplicate"
    GAP = "gap"


@attrs.frozen
class Keys:
    """The engine's key names under one ``prefix`` (``[cluster] key_prefix``)."""

    prefix: str

    def stream(self, topic: str, node: str) -> str:
        """A topic's stream: ``session/<id>`` is unique across nodes; ``sessions`` is per node."""
        return f"{self.prefix}:s:{self._topic(topic, node)}"

    def meta(self, topic: str, node: str) -> str:
        return f"{self.prefix}:m:{self._topic(topic, node)}"

    def _topic(self, topic: str, node: str) -> str:
        return f"{SESSIONS_TOPIC}@{node}" if topic == SESSIONS_TOPIC else topic

    @property
    def nodes(self) -> str:
        """The set of every node name that ever joined."""
        return f"{self.prefix}:nodes"

    def alive(self, node: str) -> str:
        """The node's heart-beat key (it expires when the node falls silent)."""
        return f"{self.prefix}:alive:{node}"

    def summaries(self, node: str) -> str:
        """The hash of the node's session summaries (session id → JSON)."""
        return f"{self.prefix}:summaries:{node}"

    def commands(self, node: str) -> str:
        """The node's command stream (read by its consumer group :data:`COMMAND_GROUP`)."""
        return f"{self.prefix}:cmd:{node}"

    def reply(self, command_id: str) -> str:
        """The list the answer to one forwarded command is pushed to."""
        return f"{self.prefix}:reply:{command_id}"


COMMAND_GROUP: Final = "hived"
"""The consumer group of every command stream (each node reads only its own stream)."""


def entry_id(seq: int) -> str:
    """The stream entry id of ``seq``."""
    return f"{seq}-0"


def entry_seq(identifier: str) -> int:
    """The seq of a stream entry id; ValueError for one that is not ``<seq>-0``."""
    ms, dash, low = identifier.partition("-")
    if not dash or not ms.isdigit() or low != "0":
        raise ValueError(f"not a mirrored entry id: {identifier!r}")
    return int(ms)


MIRROR_SCRIPT: Final = """
-- KEYS: stream, meta. ARGV: node, epoch for a new stream, mode, start_ok, minid,
-- then seq, frame pairs. Returns {status, top, epoch} (top -1, epoch "" when no meta).
-- The epoch is an integer (in decimal) that JSON carries exactly.
local top = tonumber(redis.call('HGET', KEYS[2], 'top') or '-1')
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local fresh = not epoch
local status = 'ok'
local added = 0
for i = 6, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if top >= 0 and seq <= top then
    status = 'duplicate'
  elseif top < 0 and not (ARGV[4] == '1' and added == 0) then
    status = 'gap'
    break
  elseif top >= 0 and ARGV[3] == 'strict' and seq ~= top + 1 then
    status = 'gap'
    break
  else
    redis.call('XADD', KEYS[1], seq .. '-0', 'f', ARGV[i + 1])
    top = seq
    added = added + 1
  end
end
if added > 0 then
  if fresh then
    epoch = ARGV[2]
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'node', ARGV[1])
  end
  redis.call('HSET', KEYS[2], 'top', top)
end
if ARGV[5] ~= '0' and top >= 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[5] .. '-0')
end
return {status, top, epoch or ''}
"""


@attrs.frozen
class MirrorAnswer:
    """What :data:`MIRROR_SCRIPT` answered."""

    status: Status
    top: int
    """The stream's last seq after the batch; -1 when the stream has no meta (new or lost)."""
    epoch: int
    """The stream's epoch (a random positive integer); 0 when it has no meta."""

    @classmethod
    def parse(cls, answer: object) -> MirrorAnswer:
        """From the script's raw answer; ValueError for anything else."""
        if not isinstance(answer, Sequence) or isinstance(answer, str | bytes) or len(answer) != 3:
            raise ValueError(f"unexpected answer from the mirror script: {answer!r}")
        status, top, epoch = (_text(part) for part in answer)
        try:
            return cls(Status(status), int(top), int(epoch) if epoch else 0)
        except ValueError:
            raise ValueError(f"unexpected answer from the mirror script: {answer!r}") from None


def mirror_args(
    node: str,
    new_epoch: int,
    mode: Mode,
    start_ok: bool,
    minid: int,
    pairs: Sequence[tuple[int, str]],
) -> list[str | int]:
    """The ARGV of :data:`MIRROR_SCRIPT`; ``minid`` 0 trims nothing."""
    args: list[str | int] = [node, new_epoch, mode.value, "1" if start_ok else "0", minid]
    for seq, frame in pairs:
        args.extend((seq, frame))
    return args


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
