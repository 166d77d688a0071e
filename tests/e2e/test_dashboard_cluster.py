"""The dashboard of a cluster node in a real browser: the node filter, against two real nodes
sharing a real redis-server (Playwright and Chromium as in test_dashboard.py)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from hived.client import connect
from tests.e2e.harness import SECRETS
from tests.e2e.test_cluster import Nodes, nodes  # noqa: F401  (the fixture)
from tests.e2e.test_dashboard import (  # noqa: F401
    CHROMIUM,
    Chrome,
    chrome,
    expect_state,
    log_in,
    open_tab,
    row_of,
    start,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed; .ci/run installs it"),
]


async def test_a_cluster_nodes_dashboard_filters_sessions_by_node(
    nodes: Nodes,  # noqa: F811
    chrome: Chrome,  # noqa: F811
) -> None:
    a, b = await nodes.start_all("a", "b")
    async with (
        connect(a.ws_url, SECRETS["operator"], reconnect=False) as on_a,
        connect(b.ws_url, SECRETS["operator"], reconnect=False) as on_b,
    ):
        here = await start(on_a, "chatty", name="here")
        there = await start(on_b, "chatty", name="there")
    async with open_tab(chrome, a) as tab:

        def filters_by_node(page: Page) -> None:
            log_in(page, "viewer")
            expect(page.locator("#node-filter-label")).to_be_visible()
            expect(row_of(page, there).locator("td.agent")).to_have_text("chatty on b")
            expect(row_of(page, here).locator("td.agent")).to_have_text("chatty on a")
            options = page.locator("#node-filter option")
            expect(options).to_have_text(["all", "a", "b"])
            page.select_option("#node-filter", "b")
            expect(page.locator("#sessions tbody tr")).to_have_count(1)
            expect(row_of(page, there)).to_be_visible()
            page.select_option("#node-filter", "a")
            expect(page.locator("#sessions tbody tr")).to_have_count(1)
            expect(row_of(page, here)).to_be_visible()
            page.select_option("#node-filter", "b")

        await tab.run(filters_by_node)
        b.proc.kill()  # kill -9: b's session shows UNREACHABLE, still under b's filter

        def sees_b_unreachable(page: Page) -> None:
            expect_state(page, there, "UNREACHABLE")
            expect(row_of(page, there).locator("td.activity")).to_have_text(
                re.compile("its node does not answer")
            )
            expect(page.locator("#sessions tbody tr")).to_have_count(1)
            page.select_option("#node-filter", "")
            expect(page.locator("#sessions tbody tr")).to_have_count(2)

        await tab.run(sees_b_unreachable)
