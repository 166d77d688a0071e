"""Attention: which sessions people are looking at now (DESIGN §12; sans-IO).

A client says what it watches with the ``watch`` request: the dashboard when its tab is
focused and a session is open in it (and ``focused: false`` when the tab loses focus), ``hivectl
tail SESSION`` for as long as it runs. One watch per connection; a new one replaces it, and it
ends with its connection (the registry asks ``is_open`` at each look). A notification of a
watched session is not sent while someone watches it: it waits, and is dropped if answered
meanwhile, as any is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class Watch:
    connection: int
    token_name: str
    session: str | None
    focused: bool
    since: float


class Attention:
    """The watches of open connections."""

    def __init__(self, is_open: Callable[[int], bool] = lambda _: True) -> None:
        self.is_open = is_open
        self._watches: dict[int, Watch] = {}
        self.changed: Callable[[], None] = lambda: None
        """Called when a watch is set or cleared (the notifier re-plans)."""

    def watch(self, connection: int, token_name: str, session: str | None, focused: bool) -> None:
        """Set what ``connection`` watches (``session`` None: nothing)."""
        if session is None:
            self._watches.pop(connection, None)
        else:
            self._watches[connection] = Watch(connection, token_name, session, focused, time.time())
        self.changed()

    def watches(self) -> list[Watch]:
        """The watches of connections still open (those of closed ones are forgotten)."""
        for connection in [c for c in self._watches if not self.is_open(c)]:
            del self._watches[connection]
        return list(self._watches.values())

    def watched(self) -> frozenset[str]:
        """The sessions someone watches with focus now."""
        return frozenset(w.session for w in self.watches() if w.focused and w.session)

    def to_json(self) -> list[dict[str, Any]]:
        return [attrs.asdict(w) for w in self.watches()]
