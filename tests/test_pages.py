"""Byte-bounded list replies (hived/core/pages.py)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from hived.core.errors import RequestError
from hived.core.pages import LIST_REPLY_MAX_BYTES, byte_page, int_cursor, page, sessions_page


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


def test_a_page_reads_at_most_one_item_past_its_end() -> None:
    read: list[int] = []

    def items() -> Iterator[dict[str, int]]:
        for n in range(1_000_000):
            read.append(n)
            yield {"id": n}

    kept, after = page(items(), 10, lambda item: item["id"])
    assert (len(kept), after, len(read)) == (10, 9, 11)
    read.clear()
    kept, after = page(items(), None, lambda item: item["id"], max_bytes=1000)
    assert after == kept[-1]["id"]
    assert len(read) == len(kept) + 1


def test_page_gives_the_last_kept_as_cursor_only_where_more_are_left() -> None:
    items = summaries(4, 10)
    assert page(items, 4, lambda s: s["id"]) == (items, None)
    assert page(items, None, lambda s: s["id"]) == (items, None)
    assert page(items, 3, lambda s: s["id"]) == (items[:3], items[2]["id"])
    assert page([], 3, lambda s: s["id"]) == ([], None)


def test_big_items_come_in_pages_that_hold_everything_once() -> None:
    items = summaries(40, 100_000)  # 4 MB: each page holds two; a limit of 3 changes nothing
    seen: list[dict[str, str]] = []
    rest: list[dict[str, str]] = items
    while True:
        kept, after = page(rest, 3, lambda s: s["id"])
        assert len(kept) == 2
        assert len(orjson.dumps(kept)) <= LIST_REPLY_MAX_BYTES
        seen += kept
        if after is None:
            break
        rest = [s for s in items if s["id"] < after]
    assert seen == items


def test_an_item_bigger_than_a_page_comes_alone_with_a_cursor() -> None:
    items = summaries(3, LIST_REPLY_MAX_BYTES * 2)
    assert page(items, None, lambda s: s["id"]) == (items[:1], items[0]["id"])
    assert page(items[2:], None, lambda s: s["id"]) == (items[2:], None)


@pytest.mark.parametrize("cursor", ["x", "", "-1", "1.5", "²", "1" * 5000, " 1"])
def test_an_integer_cursor_no_page_gave_is_a_bad_request_naming_where(cursor: str) -> None:
    with pytest.raises(RequestError) as caught:
        int_cursor("connections.cursor", cursor)
    assert caught.value.code == "bad_request"
    assert str(caught.value).startswith("connections.cursor: expected a cursor from a page")


def test_a_huge_bad_cursor_is_named_short_in_the_error() -> None:
    with pytest.raises(RequestError) as caught:
        int_cursor("search.cursor", "\x00" * 500_000)
    assert len(str(caught.value)) < 200


def test_an_integer_cursor_from_a_page_is_read_back() -> None:
    assert int_cursor("search.cursor", "9120") == 9120
    assert int_cursor("search.cursor", None) is None
