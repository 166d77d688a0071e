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
from tests.e2e.harness import DEADLINE_S, REPO, SECRETS, Launcher, RunningDaemon, agent_toml

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


WIDE: Final = {"width": 1366, "height": 900}
PHONE: Final = {"width": 390, "height": 844}
SCREENSHOTS: Final = REPO / "build" / "screenshots"
"""Where the test run leaves pictures of the page at both sizes, for a person to look at."""


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@asynccontextmanager
async def open_tab(
    chrome: Chrome, daemon: RunningDaemon, viewport: dict[str, int] = WIDE
) -> AsyncIterator[Tab]:
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
        page = chrome.browser.new_context(viewport=viewport).new_page()  # type: ignore[arg-type]
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
            expect(page.locator("#node-filter-label")).to_be_hidden()  # not in a cluster
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
            expect(row.locator("td.turns")).to_have_text("2")

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
            # Only the rows on screen and near it are drawn, newest last.
            assert 0 < len(seqs) <= 300
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            expect(event_items(page, "text", "line 0 ")).to_have_count(0)
            # The earlier ones are fetched (session.events) as the list is scrolled to them.
            page.click("#to-start")
            expect(event_items(page, "text", "line 0 ")).to_be_in_viewport()
            first = page.eval_on_selector_all(
                "#events li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
            )
            assert first == list(range(1, len(first) + 1))
            assert len(first) <= 300
            expect(event_items(page, "text", f"line {lines - 1} ")).to_have_count(0)

        await tab.run(shows_the_newest)
        [viewer] = [
            c for c in (await admin.request("connections"))["connections"] if c["role"] == "viewer"
        ]
        assert viewer["messages_out"] < 700, "the page was sent the whole session"


async def test_a_daemon_restart_leaves_a_clear_header_a_live_list_and_no_live_look_while_down(
    hived: Launcher, chrome: Chrome
) -> None:
    """Items 1, 2 and 7 of issue 15: with hived down the page says so, disables its controls
    and says nobody is needed; once back, the header says connected (no countdown left over)
    and the sessions that ended meanwhile leave the live list."""
    port, config = hived.config(body=agent_toml("auto", "fake_text.py", extra="autostart = 1"))
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        asker = await start(operator, "claude", prompt="this needs permission", name="asker")
        [old_auto] = [
            s["id"]
            for s in (await operator.request("sessions"))["sessions"]
            if s["name"] == "auto-1"
        ]
    async with open_tab(chrome, daemon) as tab:

        def sees_one_waiting(page: Page) -> None:
            page.clock.install()  # timers run when the test says: the countdown is checked
            log_in(page, "operator")
            expect_state(page, asker, "WAITING")
            expect(row_of(page, asker).locator(".needs")).to_have_text("needs you")
            expect(row_of(page, asker).locator("td.activity")).to_have_text("asks permission")
            expect(page).to_have_title("(1 need you) hived")
            expect_state(page, old_auto, "RUNNING")
            row_of(page, asker).click()
            expect(event_items(page, "permission_request")).to_have_count(1)

        await tab.run(sees_one_waiting)
        daemon.send_signal(signal.SIGTERM)
        assert await daemon.wait_exit() == 0

        def looks_down(page: Page) -> None:
            expect(page.locator("#conn")).to_contain_text("disconnected from hived")
            expect(page.locator("#conn")).to_contain_text("reconnecting in")
            expect(page.locator("body")).to_have_class(re.compile(r"\boffline\b"))
            expect(page.locator(".needs")).to_have_count(0)
            expect(page).to_have_title("hived")
            for control in ("#start-form button[type=submit]", "#all", "#restart"):
                expect(page.locator(control)).to_be_disabled()
            screenshot(page, "wide-hived-down")

        await tab.run(looks_down)
        await hived.start(config, port=port)

        def is_back(page: Page) -> None:
            page.clock.run_for(2000)  # past the first reconnect delay (at most 1 s)
            expect(page.locator("#conn")).to_have_text("connected as operator-token (operator)")
            expect(page.locator("body")).not_to_have_class(re.compile(r"\boffline\b"))
            page.clock.run_for(5000)  # the countdown of the loss must not come back
            expect(page.locator("#conn")).to_have_text("connected as operator-token (operator)")
            # The old auto-1 ended with the daemon: the live list has only the new one.
            expect(row_of(page, old_auto)).to_have_count(0)
            autos = page.locator("#sessions tbody tr").filter(has_text="auto-1")
            expect(autos).to_have_count(1)
            expect(autos.locator("td.state")).to_have_text("RUNNING")
            expect(page.locator("#all")).to_be_enabled()
            # The open session ended too: it stays while open, without live controls.
            expect_state(page, asker, "EXITED")
            expect(page.locator("#interrupt")).to_be_hidden()
            expect(page.locator("#stop")).to_be_hidden()
            expect(page.locator("#input-form")).to_be_hidden()
            expect(page.locator("#ended-note")).to_contain_text("This session has ended")

        await tab.run(is_back)


async def test_an_error_shows_beside_its_action_and_clears_on_the_next_success(
    hived: Launcher, chrome: Chrome, tmp_path: Path
) -> None:
    """Item 3, and starting from the template list: the start form lists templates with their
    descriptions, offers a folder only where one may be chosen."""
    rooted = agent_toml(
        "rooted",
        "fake_text.py",
        extra=f'description = "Echoes, in a folder you choose"\ncwd_roots = ["{tmp_path}"]',
    )
    port, config = hived.config(body=rooted)
    daemon = await hived.start(config, port=port)
    async with open_tab(chrome, daemon) as tab:

        def starts(page: Page) -> None:
            log_in(page, "operator")
            page.click("#start summary")
            options = page.locator("#start-agent option")
            expect(options).to_have_text(["claude", "codex", "rooted", "text"])
            page.select_option("#start-agent", "claude")
            expect(page.locator("#start-cwd-label")).to_be_hidden()
            page.select_option("#start-agent", "rooted")
            expect(page.locator("#start-description")).to_have_text(
                "Echoes, in a folder you choose · text agent"
            )
            page.fill("#start-cwd", "/etc")
            page.click("#start-form button[type=submit]")
            expect(page.locator("#start-error")).to_contain_text("cwd /etc is outside the folders")
            expect(page.locator("#toast")).to_be_in_viewport()
            expect(page.locator("#toast-text")).to_contain_text("cwd /etc is outside the folders")
            page.fill("#start-cwd", str(tmp_path))
            page.fill("#start-name", "chosen")
            page.click("#start-form button[type=submit]")
            expect(page.locator("#detail-name")).to_have_text("chosen")
            expect(page.locator("#toast")).to_be_hidden()
            expect(page.locator("#start-error")).to_be_hidden()
            expect(event_items(page, "text", "fake_text ready")).to_have_count(1)

        await tab.run(starts)


async def test_the_keyboard_path_to_a_permission_and_states_that_need_a_person(
    hived: Launcher, chrome: Chrome
) -> None:
    """j/k/Enter/n/a/d, and the states: a turn done is shown but raises no alert; a request
    raises it; opening a session does not change its Activity (item 4)."""
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        open_tab(chrome, daemon) as tab,
    ):
        done = await start(operator, "claude", prompt="hello", name="done")
        asker = await start(operator, "claude", prompt="this needs permission", name="asker")

        def answers_by_keyboard(page: Page) -> None:
            log_in(page, "operator")
            expect_state(page, done, "WAITING")
            expect_state(page, asker, "WAITING")
            done_row, asker_row = row_of(page, done), row_of(page, asker)
            expect(done_row.locator("td.activity")).to_have_text("turn done; waits for a prompt")
            expect(done_row).to_have_attribute("data-attention", "done")
            expect(done_row.locator(".needs")).to_have_count(0)
            expect(asker_row).to_have_attribute("data-attention", "permission")
            expect(page).to_have_title("(1 need you) hived")
            page.keyboard.press("j")  # the newest first: asker, then done
            page.keyboard.press("j")
            expect(done_row).to_be_focused()
            page.keyboard.press("Enter")
            expect(page.locator("#detail-name")).to_have_text("done")
            expect(event_items(page, "result")).to_have_count(1)
            expect(done_row.locator("td.activity")).to_have_text("turn done; waits for a prompt")
            page.keyboard.press("n")
            expect(page.locator("#detail-name")).to_have_text("asker")
            asked = event_items(page, "permission_request")
            expect(asked.locator("button.allow")).to_be_visible()
            expect(asker_row.locator("td.activity")).to_have_text("asks permission")
            screenshot(page, "wide-permission")
            page.keyboard.press("a")
            expect(asked.locator(".answer")).to_have_text("allowed")
            expect(event_items(page, "result")).to_have_count(1)

            page.fill("#input-text", "needs permission again")
            page.click("#input-form button[type=submit]")
            again = event_items(page, "permission_request").nth(1)
            again.locator("input.reason").fill("not now")
            again.locator("button.deny").click()
            expect(again.locator(".answer")).to_have_text("denied: not now")
            expect(event_items(page, "input", "denied request")).to_contain_text("not now")

        await tab.run(answers_by_keyboard)


async def test_on_a_phone_the_page_fits_and_an_open_session_comes_first(
    hived: Launcher, chrome: Chrome
) -> None:
    """Item 6 at 390×844 (and 360 wide): no sideways scroll, the open session in place of
    the list, messages as wide as the screen; escape sequences shown as text (no \\x1b)."""
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        open_tab(chrome, daemon, PHONE) as tab,
    ):
        waiting = await start(operator, "claude", prompt="this needs permission", name="phone")
        texty = await start(operator, "text", name="a-rather-long-session-name-for-a-phone")
        await operator.request(
            "session.input", session=texty, text="\x1b[31mred\x1b[0m and a long line " * 4
        )

        def fits(page: Page) -> None:
            log_in(page, "operator")
            expect_state(page, waiting, "WAITING")
            expect_state(page, texty, "RUNNING")
            for width in (390, 360):
                page.set_viewport_size({"width": width, "height": 844})
                assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.set_viewport_size(PHONE)
            screenshot(page, "phone-list")
            row_of(page, texty).click()
            expect(page.locator("#overview")).to_be_hidden()
            said = event_items(page, "text", "you said: red and a long line")
            expect(said).to_have_count(1)
            assert "\x1b" not in said.inner_text()
            assert "[31m" not in said.inner_text()
            assert said.locator(".body").bounding_box()["width"] > 300  # type: ignore[index]
            detail = page.locator("#detail").bounding_box()
            assert detail is not None
            assert detail["y"] < 100
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            screenshot(page, "phone-session")
            page.click("#back")
            expect(page.locator("#overview")).to_be_visible()
            row_of(page, waiting).click()
            asked = event_items(page, "permission_request")
            expect(asked.locator("button.allow")).to_be_visible()
            box = asked.locator("button.allow").bounding_box()
            assert box is not None
            assert box["height"] >= 44  # a finger's target
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            screenshot(page, "phone-permission")
            asked.locator("button.allow").click()
            expect(asked.locator(".answer")).to_have_text("allowed")

        await tab.run(fits)
