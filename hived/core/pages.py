"""Replies that list things, bounded in bytes: a page, and where the next one starts.

A list reply (``sessions``) must fit a client's default frame limit (1 MiB for the
``websockets`` library and for browsers' usual defaults) however many items there are:
:func:`byte_page` keeps the first items whose JSON takes at most ``max_bytes`` (always at least
one), and says whether any were left out; the reply then carries a ``next`` cursor to ask for
the rest (docs/protocol.md, ``sessions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

LIST_REPLY_MAX_BYTES: Final = 262_144
"""A list reply's items take at most this much JSON (as a ``session.events`` page does)."""


def byte_page(
    items: Sequence[Mapping[str, Any]], max_bytes: int = LIST_REPLY_MAX_BYTES
) -> tuple[list[Mapping[str, Any]], bool]:
    """The first of ``items`` whose JSON (commas counted) is at most ``max_bytes`` — at least
    one — and whether some were left out."""
    kept: list[Mapping[str, Any]] = []
    size = 0
    for item in items:
        size += len(orjson.dumps(item)) + 1
        if kept and size > max_bytes:
            return kept, True
        kept.append(item)
    return kept, False


def sessions_page(newest_first: Sequence[Mapping[str, Any]], limit: int | None) -> dict[str, Any]:
    """The ``sessions`` reply for every wanted summary, newest first: at most ``limit`` of
    them and :data:`LIST_REPLY_MAX_BYTES` of JSON, and ``next`` (the last id shown) where some
    are left for a page after it."""
    wanted = newest_first[:limit] if limit else newest_first
    page, cut = byte_page(wanted)
    more = cut or len(wanted) < len(newest_first)
    return {"sessions": page, "next": page[-1]["id"] if more and page else None}
