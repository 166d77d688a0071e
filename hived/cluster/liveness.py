"""Which nodes are alive, from what their heart-beat keys say.

How it works: every node sets its own heart-beat key with a time to live of
:func:`heartbeat_ttl_ms` and looks, each heart-beat, at which keys of the known nodes still
exist. :meth:`Liveness.observe` turns one such look into the nodes that went silent or came
back since the last one, so that their sessions are marked UNREACHABLE, or shown again, once.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


def heartbeat_ttl_ms(interval_s: float) -> int:
    """How long a heart-beat keeps a node alive: one and a half intervals, so that a node
    that missed one beat is still alive, and a silent node is seen within two intervals by a
    peer that looks every half interval."""
    return max(1, round(interval_s * 1500))


@attrs.frozen
class Change:
    node: str
    alive: bool


@attrs.define
class Liveness:
    """The last seen liveness of the other nodes (``me`` is always alive)."""

    me: str
    alive: dict[str, bool] = attrs.Factory(dict)

    def observe(self, seen: Mapping[str, bool]) -> list[Change]:
        """Take one look (node → its heart-beat key exists); the changes since the last look.

        A node seen for the first time is a change only when it is silent, so that its
        sessions are marked; a node known alive is not announced again.
        """
        changes = []
        for node, alive in sorted(seen.items()):
            if node == self.me:
                continue
            before = self.alive.get(node)
            if (before is None and not alive) or (before is not None and before != alive):
                changes.append(Change(node, alive))
            self.alive[node] = alive
        return changes

    def is_alive(self, node: str) -> bool:
        return node == self.me or self.alive.get(node, False)
