"""Byte-bounded list replies (hived/core/pages.py)."""

from __future__ import annotations

import orjson

from hived.core.pages import LIST_REPLY_MAX_BYTES, byte_page, sessions_page


def summaries(count: int, pad: int) -> list[dict[str, str]]:
    return [{"id": f"{count - n:08d}", "name": "x" * pad} for n in range(count)]


def test_a_page_holds_every_item_that_fits() -> None:
    items = summaries(10, 10)
    assert byte_page(items) == (items, False)


def test_a_page_stops_before_the_byte_cap_and_says_so() -> None:
    items = summaries(5000, 500)  # about 2.6 MB of JSON: more than a 1 MiB client limit
    page, cut = byte_page(items)
    assert cut
    assert page == items[: len(page)]
    assert len(orjson.dumps(page)) <= LIST_REPLY_MAX_BYTES + 2
    assert len(orjson.dumps(items[: len(page) + 1])) > LIST_REPLY_MAX_BYTES


def test_a_page_holds_one_item_even_when_it_alone_is_larger() -> None:
    items = summaries(3, 100_000)
    assert byte_page(items, 1000) == (items[:1], True)


def test_no_items_is_an_empty_last_page() -> None:
    assert byte_page([]) == ([], False)


def test_sessions_pages_follow_one_another_with_next_until_none() -> None:
    items = summaries(3000, 200)  # about 700 KB of summaries: three pages
    seen: list[dict[str, str]] = []
    rest = items
    while True:
        reply = sessions_page(rest, None)
        seen += reply["sessions"]
        if reply["next"] is None:
            break
        rest = [s for s in items if s["id"] < reply["next"]]
    assert seen == items


def test_a_limit_cuts_the_page_and_leaves_a_next() -> None:
    items = summaries(10, 10)
    assert sessions_page(items, 4) == {"sessions": items[:4], "next": items[3]["id"]}
    assert sessions_page(items, 10) == {"sessions": items, "next": None}
