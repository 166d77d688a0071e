"""The dashboard's use of the history requests in a real browser: the Costs panel (totals per
day, per template and per session over a chosen period, from `usage`, drawn as a uPlot bar chart
beside a table) and a session's transcript downloaded (from `session.export`'s pages). The
sessions are the fake Claude's ($0.0042 a turn); the browser and the tabs are test_dashboard's."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Final

import pytest
import trio
from playwright.sync_api import Page, expect

from hived.client import connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher
from tests.e2e.test_dashboard import (
    CHROMIUM,
    PHONE,
    Chrome,
    chrome,
    event_items,
    log_in,
    open_tab,
    row_of,
    screenshot,
    start,
)
from tests.e2e.test_dashboard_output import axe_violations

__all__ = ["chrome"]  # the module's one Chromium, shared with test_dashboard's fixture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed; .ci/run installs it"),
]

BAR_PIXELS: Final = """canvas => {
  const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let bars = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 0 && b > 150 && b > r + 40 && b > g + 20) bars += 1;
  }
  return bars;
}"""
"""How many pixels of the canvas are the bars' blue: more than none once bars are drawn."""


def table_rows(page: Page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#costs-table tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
    )


def bars_drawn(page: Page) -> int:
    return int(page.locator("#costs-chart canvas").evaluate(BAR_PIXELS))


async def test_costs_per_day_template_and_session_over_a_period_with_a_chart(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        await start(operator, "claude", prompt="hello", name="first")
        second = await start(operator, "claude", prompt="hello", name="second")
        await operator.request("session.input", session=second, text="and again")
        # The ledger is kept by a follower of the events table: polled until it has all 3 turns.
        with trio.fail_after(DEADLINE_S):
            while True:
                usage = await operator.request("usage", by="day")
                if usage["total"]["turns"] >= 3:
                    break
                await trio.sleep(0.1)
        today = dt.datetime.now(dt.UTC).date()
        tomorrow = (today + dt.timedelta(days=1)).isoformat()

        async with open_tab(chrome, daemon) as tab:

            def shows_costs(page: Page) -> None:
                log_in(page, "viewer")
                page.click("#costs summary")
                expect(page.locator("#costs-key")).to_have_text("Day (UTC)")
                expect(page.locator("#costs-table tbody tr")).to_have_count(1)
                assert table_rows(page) == [[today.isoformat(), "$0.0126", "360/135", "3", "2"]]
                expect(page.locator("#costs-table tfoot")).to_have_text(
                    re.compile(r"^Total\$0\.0126360/13532$")
                )
                expect(page.locator("#costs-chart canvas")).to_have_count(1)
                assert bars_drawn(page) > 0
                screenshot(page, "wide-costs")
                assert axe_violations(page) == []

                page.select_option("#costs-by", "template")
                expect(page.locator("#costs-key")).to_have_text("Template")
                expect(page.locator("#costs-table tbody tr")).to_have_count(1)
                assert table_rows(page) == [["claude", "$0.0126", "360/135", "3", "2"]]

                # Per session: the costliest first, by name.
                page.select_option("#costs-by", "session")
                expect(page.locator("#costs-table tbody tr")).to_have_count(2)
                assert table_rows(page) == [
                    ["second", "$0.0084", "240/90", "2", "1"],
                    ["first", "$0.0042", "120/45", "1", "1"],
                ]
                assert bars_drawn(page) > 0

                # Per folder: both ran in the template's.
                page.select_option("#costs-by", "cwd")
                expect(page.locator("#costs-key")).to_have_text("Folder")
                expect(page.locator("#costs-table tbody tr")).to_have_count(1)
                assert table_rows(page)[0][1:] == ["$0.0126", "360/135", "3", "2"]

                # A period with nothing in it: the table says so, the total is nought.
                page.select_option("#costs-period", "custom")
                page.fill("#costs-since", tomorrow)
                page.locator("#costs-since").dispatch_event("change")
                expect(page.locator("#costs-table tbody")).to_have_text(
                    "Nothing spent in this period"
                )
                expect(page.locator("#costs-table tfoot")).to_contain_text("$0.0000")
                expect(page.locator("#costs-chart canvas")).to_have_count(0)

            await tab.run(shows_costs)

        async with open_tab(chrome, daemon, PHONE) as tab:

            def fits_a_phone(page: Page) -> None:
                log_in(page, "viewer")
                page.click("#costs summary")
                expect(page.locator("#costs-chart canvas")).to_have_count(1)
                assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
                page.locator("#costs").scroll_into_view_if_needed()
                screenshot(page, "phone-costs")

            await tab.run(fits_a_phone)


async def test_a_transcript_downloads_as_markdown_and_as_json_lines(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        open_tab(chrome, daemon) as tab,
    ):
        session = await start(operator, "claude", prompt="say hello", name="told")

        def downloads(page: Page) -> tuple[str, str]:
            log_in(page, "viewer")
            row_of(page, session).click()
            expect(event_items(page, "result")).to_have_count(1)
            texts = []
            for fmt in ("md", "jsonl"):
                page.select_option("#download-format", fmt)
                with page.expect_download() as started:
                    page.click("#download")
                download = started.value
                assert download.suggested_filename == f"told.{fmt}"
                texts.append(Path(download.path()).read_text())
            return texts[0], texts[1]

        markdown, lines = await tab.run(downloads)
        assert "say hello" in markdown
        assert "Done: the command printed" in markdown
        events = [json.loads(line) for line in lines.splitlines()]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert {"tool_use", "message", "result"} <= {e["kind"] for e in events}
