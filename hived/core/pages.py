"""Replies that list things, bounded in bytes: a page, and where the next one starts.

A list reply (``sessions``, ``connections``, ``notifications``, ``search``) must fit a client's
default frame limit (1 MiB for the ``websockets`` library and for browsers' usual defaults)
however many items there are and however big each is: :func:`byte_page` keeps the first items
whose JSON takes at most ``max_bytes`` (always at least one), and says whether any were left
out; :func:`page` adds a request's ``limit`` and the cursor of the last item kept, which the
reply carries as ``next`` for the client to ask for the rest (docs/protocol.md, §12 "Pages").
Items are read lazily, at most one past the page, so a list read from SQLite or built from live
objects is never made whole. ``status`` embeds lists too (sessions, watches, nodes): each is
capped at :data:`STATUS_LIST_MAX_BYTES`, with its full count beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import orjson

from hived.core.convert import expected
from hived.core.errors import RequestError

LIST_REPLY_MAX_BYTES: Final = 262_144
"""A list reply's items take at most this much JSON (as a ``session.events`` page does)."""
STATUS_LIST_MAX_BYTES: Final = 65_536
"""Each list embedded in ``status`` takes at most this much JSON: three of them, and the rest
of ``status``, stay far below a client's 1 MiB."""

LABEL_MAX_CHARS: Final = 200
"""A name repeated in a list for people to read (a session's, as a usage row's label or in a
``session.forget`` reply) is cut past this: a list of a thousand stays small."""

Item = TypeVar("Item", bound=Mapping[str, Any])
Cursor = TypeVar("Cursor")


def byte_page(
    items: Iterable[Item], max_bytes: int = LIST_REPLY_MAX_BYTES
) -> tuple[list[Item], bool]:
    """The first of ``items`` whose JSON (commas counted) is at most ``max_bytes`` — at least
    one — and whether some were left out. Reads at most one item past the page."""
    kept: list[Item] = []
    size = 0
    for item in items:
        size += len(orjson.dumps(item)) + 1
        if kept and size > max_bytes:
            return kept, True
        kept.append(item)
    return kept, False


def page(
    items: Iterable[Item],
    limit: int | None,
    cursor_of: Callable[[Item], Cursor],
    max_bytes: int = LIST_REPLY_MAX_BYTES,
) -> tuple[list[Item], Cursor | None]:
    """The first of ``items``: at most ``limit`` (None: no count) and ``max_bytes`` of JSON,
    at least one; and the cursor of the last one kept where more are left, else None."""
    source = iter(items)
    wanted = itertools.islice(source, limit) if limit else source
    kept, cut = byte_page(wanted, max_bytes)
    more = cut or (limit is not None and next(source, None) is not None)
    return kept, cursor_of(kept[-1]) if more and kept else None


def sessions_page(newest_first: Iterable[Mapping[str, Any]], limit: int | None) -> dict[str, Any]:
    """The ``sessions`` reply for every wanted summary, newest first: at most ``limit`` of
    them and :data:`LIST_REPLY_MAX_BYTES` of JSON, and ``next`` (the last id shown) where some
    are left for a page after it."""
    kept, after = page(newest_first, limit, lambda summary: summary["id"])
    return {"sessions": kept, "next": after}


def int_cursor(where: str, cursor: str | None) -> int | None:
    """A cursor that is an integer (``str(next)``), or None; a ``bad_request`` naming
    ``where`` (``search.cursor``) for anything a page did not give."""
    if cursor is None:
        return None
    # ASCII digits only, and few enough for an int64 (int() takes "²", and 5000 digits slowly).
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise RequestError("bad_request", f"{where}: {expected('a cursor from a page', cursor)}")
    return int(cursor)


def label(text: str) -> str:
    """``text`` cut at :data:`LABEL_MAX_CHARS` (with "…" where it was cut)."""
    return text if len(text) <= LABEL_MAX_CHARS else text[: LABEL_MAX_CHARS - 1] + "…"
