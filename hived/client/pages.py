"""Every item of a list reply, page after page.

hived answers ``sessions``, ``connections``, ``notifications`` and ``search`` in pages bounded
in bytes (docs/protocol.md §12, "Pages"): a reply holds as much as fits in 256 KiB, and its
``next`` is the cursor of the page after it, null on the last. :func:`request_all` asks again
with that cursor until ``next`` is null (or the caller has as many items as it wanted), so the
caller sees everything it asked for, whatever the size of its items.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from hived.core.messages import MAX_LIMIT, SEARCH_MAX_LIMIT

CURSOR_FIELDS: Final = {
    "sessions": "before",
    "connections": "cursor",
    "notifications": "cursor",
    "search": "cursor",
}
"""The request field that takes a page's ``next``, per paged request type."""
MOST_PER_PAGE: Final = {"search": SEARCH_MAX_LIMIT}
"""The largest ``limit`` a page may ask for, where it is not ``MAX_LIMIT``."""
MAX_PAGES: Final = 10_000
"""Pages read at most (a bound against a server that never says null)."""


async def request_all(
    request: Callable[..., Awaitable[Any]],
    type_: str,
    key: str,
    *,
    most: int | None = None,
    **fields: Any,
) -> list[dict[str, Any]]:
    """The ``key`` items of every page of the ``type_`` request with ``fields``, in order: at
    most ``most`` of them (None: all), each page asking for no more than are still wanted.
    ``request`` is :meth:`hived.client.Client.request`."""
    cursor_field = CURSOR_FIELDS[type_]
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        if most is not None:
            fields["limit"] = min(most - len(items), MOST_PER_PAGE.get(type_, MAX_LIMIT))
        reply = await request(type_, **fields, **{cursor_field: cursor})
        if not isinstance(reply, dict):
            break
        items.extend(item for item in reply.get(key) or [] if isinstance(item, dict))
        cursor = reply.get("next")
        if cursor is None or (most is not None and len(items) >= most):
            break
    return items[:most]
