"""The dashboard at ``/`` in a real browser: Playwright driving Debian's Chromium against the
real daemon, with the fake agents of examples/agents.

Playwright's sync API belongs to the thread that started it, and trio's worker threads vary
from call to call, so one Chromium for the whole module lives in one thread of its own
(:class:`Chrome`); a test hands it sync functions of a page through ``trio.to_thread.run_sync``
while the daemon runs as a subprocess. Every wait is Playwright's own (``expect`` polls under
a deadline). Each tab records console errors and page errors, among them the Content Security
Policy's refusals, and a test fails if there were any.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import pytest
import trio
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from hived.client import Client, connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher, RunningDaemon, agent_toml

CHROMIUM: Final = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed; .ci/run installs it"),
]

EXPECT_TIMEOUT_MS: Final = int(DEADLINE_S * 1000)
REFUSED_CONNECTION: Final = re.compile(
    r"WebSocket connection to .* failed: .*ERR_CONNECTION_REFUSED"
)
XSS: Final = '<img src=x onerror="window.pwned=1">'

T = TypeVar("T")


@attrs.frozen
class Chrome:
    """One Chromium, and the one thread that may drive it."""

    thread: ThreadPoolExecutor
    browser: Browser

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the browser's thread; a trio worker thread waits for it."""
        return await trio.to_thread.run_sync(lambda: self.thread.submit(fn, *args).result())


@attrs.frozen
class Tab:
    """A page in a fresh browser context, and the problems its console reported."""

    chrome: Chrome
    page: Page
    problems: list[str]

    async def run(self, fn: Callable[[Page], T]) -> T:
        return await self.chrome.call(fn, self.page)


@pytest.fixture(scope="module")
def chrome() -> Iterator[Chrome]:
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
    playwright = thread.submit(lambda: sync_playwright().start()).result()
    try:
        browser = thread.submit(
            lambda: playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        ).result()
        expect.set_options(timeout=EXPECT_TIMEOUT_MS)
        yield Chrome(thread, browser)
        thread.submit(browser.close).result()
    finally:
        thread.submit(playwright.stop).result()
        thread.shutdown()


@asynccontextmanager
async def open_tab(chrome: Chrome, daemon: RunningDaemon) -> AsyncIterator[Tab]:
    """The dashboard of ``daemon`` in a new tab; fails the test on any console error."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # While hived is down, Chromium reports each refused reconnection attempt; the page
        # handles those by waiting and trying again.
        if message.type == "error" and not REFUSED_CONNECTION.search(message.text):
            problems.append(f"console: {message.text}")

    def on_page_error(error: Error) -> None:
        problems.append(f"page error: {error}")

    def open_page() -> Page:
        page = chrome.browser.new_context().new_page()
        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        page.goto(f"http://127.0.0.1:{daemon.port}/")
        return page

    page = await chrome.call(open_page)
    try:
        yield Tab(chrome, page, problems)
    finally:
        await chrome.call(page.context.close)
    assert problems == []


def log_in(page: Page, role: str) -> None:
    page.fill("#token", SECRETS[role])
    page.click("#login button[type=submit]")
    expect(page.locator("#conn")).to_have_text(f"connected as {role}-token ({role})")
    expect(page.locator("#login")).to_be_hidden()


def row_of(page: Page, session: str) -> Locator:
    return page.locator(f'#sessions tbody tr[data-session="{session}"]')


def expect_state(page: Page, session: str, state: str) -> None:
    row = row_of(page, session)
    expect(row.locator("td.state")).to_have_text(re.compile(rf"^{state}(needs you)?$"))
    expect(row).to_have_class(re.compile(rf"\bstate-{state}\b"))


def event_items(page: Page, kind: str, text: str = "") -> Locator:
    items = page.locator(f'#events li[data-kind="{kind}"]')
    return items.filter(has_text=text) if text else items


async def start(client: Client, agent: str, **fields: Any) -> str:
    return str((await client.request("session.start", agent=agent, **fields))["session"])


async def test_a_viewer_watches_sessions_live_and_is_offered_no_actions(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        open_tab(chrome, daemon) as tab,
    ):
        session = await start(operator, "claude", prompt="hello", name="watched")

        def sees_it_wait(page: Page) -> None:
            log_in(page, "viewer")
            expect_state(page, session, "WAITING")
            row = row_of(page, session)
            expect(row.locator("td.name")).to_have_text("watched")
            expect(row.locator("td.agent")).to_have_text("claude")
            expect(row.locator("td.cost")).to_have_text("$0.0042")
            expect(row.locator("td.tokens")).to_have_text("120/45")  # in/out, as in hivectl
            row.click()
            expect(page.locator(f'#detail[data-session="{session}"]')).to_be_visible()
            expect(event_items(page, "tool_use", "Bash")).to_have_count(1)
            expect(event_items(page, "result")).to_have_count(1)
            for control in ("#start-form", "#input-form", "#interrupt", "#stop", "#restart"):
                expect(page.locator(control)).to_be_hidden()
            assert SECRETS["viewer"] not in page.url

        await tab.run(sees_it_wait)
        await operator.request("session.stop", session=session)

        def sees_it_end_then_reloads(page: Page) -> None:
            expect_state(page, session, "EXITED")
            expect(event_items(page, "state", "EXITED")).to_have_count(1)
            page.reload()  # still logged in: the token is in sessionStorage
            expect(page.locator("#conn")).to_have_text("connected as viewer-token (viewer)")
            # Live sessions by default; #all asks for the ended ones too.
            expect(page.locator("#sessions tbody tr")).to_have_count(0)
            page.check("#all")
            expect_state(page, session, "EXITED")
            page.click("#logout")
            expect(page.locator("#login")).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0

        await tab.run(sees_it_end_then_reloads)


async def test_an_operator_starts_prompts_approves_and_stops_a_session(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with open_tab(chrome, daemon) as tab:

        def drives_a_session(page: Page) -> None:
            log_in(page, "operator")
            page.click("#start summary")
            page.select_option("#start-agent", "claude")
            page.fill("#start-name", "from-the-page")
            page.click("#start-form button[type=submit]")
            detail = page.locator("#detail[data-session]")
            expect(detail).to_be_visible()
            session = detail.get_attribute("data-session")
            assert session
            row = row_of(page, session)
            expect(row).to_have_class(re.compile(r"\bselected\b"))
            expect(row.locator("td.name")).to_have_text("from-the-page")

            page.fill("#input-text", "run the tests")
            page.click("#input-form button[type=submit]")
            expect(event_items(page, "input", "run the tests")).to_have_count(1)
            expect(event_items(page, "message", "Done: the command printed")).to_have_count(1)
            expect(event_items(page, "tool_use", "echo hello from fake claude")).to_have_count(1)
            expect(row.locator("td.cost")).to_have_text("$0.0042")
            expect_state(page, session, "WAITING")

            page.fill("#input-text", "this needs permission")
            page.click("#input-form button[type=submit]")
            asked = event_items(page, "permission_request")
            expect(asked.locator("button.allow")).to_be_visible()
            expect_state(page, session, "WAITING")
            asked.locator("button.allow").click()
            expect(asked.locator(".answer")).to_have_text("allowed")
            expect(event_items(page, "result")).to_have_count(2)
            expect(row.locator("td.cost")).to_have_text("$0.0084")
            expect(row.locator("td.turns")).to_have_text("4")

            page.click("#stop")
            expect(page.locator("#stop-question")).to_have_text(
                "Stop from-the-page? Its agent is ended."
            )
            page.click("#stop-yes")
            expect_state(page, session, "EXITED")
            expect(page.locator("#error")).to_be_hidden()

        await tab.run(drives_a_session)


async def test_a_wrong_token_shows_the_close_reason_and_the_login_form(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with open_tab(chrome, daemon) as tab:

        def is_refused(page: Page) -> None:
            page.fill("#token", "not-a-token-at-all")
            page.click("#login button[type=submit]")
            expect(page.locator("#conn")).to_contain_text("4001")
            expect(page.locator("#conn")).to_contain_text("unknown token")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#dashboard")).to_be_hidden()
            assert "not-a-token" not in page.url
            assert page.evaluate("sessionStorage.length") == 0

        await tab.run(is_refused)


async def test_agent_output_and_names_are_shown_as_text_never_as_markup(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        open_tab(chrome, daemon) as tab,
    ):
        session = await start(operator, "text", name=XSS)
        await operator.request("session.input", session=session, text=XSS)

        def shows_text(page: Page) -> None:
            log_in(page, "viewer")
            row = row_of(page, session)
            expect(row.locator("td.name")).to_have_text(XSS)
            row.click()
            expect(event_items(page, "text", f"you said: {XSS}")).to_have_count(1)
            expect(page.locator("#detail-name")).to_have_text(XSS)
            expect(page.locator("img")).to_have_count(0)
            assert page.evaluate("typeof window.pwned") == "undefined"

        await tab.run(shows_text)


def catches_up(page: Page, watched: str, said: str) -> None:
    """The tail of ``watched`` shows ``said`` once, and every seq from 1 once."""
    expect(page.locator("#conn")).to_have_text("connected as viewer-token (viewer)")
    expect(event_items(page, "text", f"you said: {said}")).to_have_count(1)
    expect(event_items(page, "text", "fake_text ready")).to_have_count(1)
    seqs = page.eval_on_selector_all(
        "#events li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
    )
    assert seqs == list(range(1, len(seqs) + 1))


async def test_after_a_kick_the_page_waits_for_reconnect_then_shows_what_happened_meanwhile(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin,
        open_tab(chrome, daemon) as tab,
    ):
        watched = await start(operator, "text", name="watched")
        other = await start(operator, "text", name="other")

        def follows(page: Page) -> None:
            log_in(page, "viewer")
            expect_state(page, other, "RUNNING")
            row_of(page, watched).click()
            expect(event_items(page, "text", "fake_text ready")).to_have_count(1)

        await tab.run(follows)
        [page_connection] = [
            c["id"]
            for c in (await admin.request("connections"))["connections"]
            if c["role"] == "viewer"
        ]
        await admin.request("connection.kick", connection=page_connection, reason="test kick")

        def waits_for_the_user(page: Page) -> None:
            # Close code 1000 means "on purpose": no reconnecting by itself (docs/protocol.md).
            expect(page.locator("#conn")).to_have_text(
                "disconnected from hived (closed 1000: test kick)"
            )
            expect(page.locator("#reconnect")).to_be_visible()

        await tab.run(waits_for_the_user)
        await operator.request("session.input", session=watched, text="said meanwhile")
        await operator.request("session.stop", session=other)

        def reconnects(page: Page) -> None:
            page.click("#reconnect")
            catches_up(page, watched, "said meanwhile")
            # Ended while the page was away: gone from the live list, there with "show ended".
            expect(row_of(page, other)).to_have_count(0)
            page.check("#all")
            expect_state(page, other, "EXITED")
            expect(page.locator("#reconnect")).to_be_hidden()

        await tab.run(reconnects)
        viewers = [
            c["id"]
            for c in (await admin.request("connections"))["connections"]
            if c["role"] == "viewer"
        ]
        assert len(viewers) == 1
        assert viewers != [page_connection]


async def test_the_page_resumes_across_a_daemon_restart_with_nothing_lost_or_doubled(
    hived: Launcher, chrome: Chrome
) -> None:
    daemon = await hived.start()
    async with open_tab(chrome, daemon) as tab:
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
            watched = await start(operator, "text", name="watched")

            def follows(page: Page) -> None:
                log_in(page, "viewer")
                row_of(page, watched).click()
                expect(event_items(page, "text", "fake_text ready")).to_have_count(1)

            await tab.run(follows)
            await operator.request("session.input", session=watched, text="before the restart")
            await tab.run(lambda page: catches_up(page, watched, "before the restart"))
        daemon.send_signal(signal.SIGTERM)  # the page gets 1001; the session is stopped
        assert await daemon.wait_exit() == 0
        await hived.start(port=daemon.port)  # the same state folder: seqs go on

        def resumes(page: Page) -> None:
            catches_up(page, watched, "before the restart")
            expect_state(page, watched, "EXITED")
            expect(event_items(page, "state", "→ EXITED")).to_have_count(1)

        await tab.run(resumes)


async def test_a_long_session_sends_the_page_only_its_newest_events(
    hived: Launcher, chrome: Chrome
) -> None:
    lines = 1500
    port, config = hived.config(body=agent_toml("flood", "misbehave.py", "flood", str(lines)))
    daemon = await hived.start(config, port=port)
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin,
        open_tab(chrome, daemon) as tab,
    ):
        flood = await start(operator, "flood", name="flood")
        # Every line is kept before the page looks: it must not be sent them all.
        with trio.fail_after(DEADLINE_S):
            while True:
                page = await operator.request("session.events", session=flood, since=lines)
                if page["events"]:
                    break
                await trio.sleep(0.05)

        def shows_the_newest(page: Page) -> None:
            log_in(page, "viewer")
            page.click("#all")
            row_of(page, flood).click()
            expect(event_items(page, "text", f"line {lines - 1} ")).to_have_count(1)
            seqs = page.eval_on_selector_all(
                "#events li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
            )
            assert 0 < len(seqs) <= 500
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            expect(event_items(page, "text", "line 0 ")).to_have_count(0)

        await tab.run(shows_the_newest)
        [viewer] = [
            c for c in (await admin.request("connections"))["connections"] if c["role"] == "viewer"
        ]
        assert viewer["messages_out"] < 700, "the page was sent the whole session"
