"""The dashboard's agent output in a real browser: Markdown through marked and DOMPurify, tool
calls as cards, edits as diffs, terminal colours, questions and elicitations answered in forms,
"always allow", a 100k-event session, and axe-core's accessibility rules.

The agent is tests/e2e/dashboard_agent.py, a scripted Claude Code whose turns are chosen by a
word of the prompt; the browser and the tabs are test_dashboard's (Chromium, one thread; a tab
fails its test on any console error, among them the Content Security Policy's refusals).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

import pytest
import trio
from playwright.sync_api import Page, expect

from hived.client import Client, connect
from hived.core.drivers.acp_updates import ToolCalls
from hived.core.drivers.codex_items import tool_result_data, tool_use_data
from tests.e2e.harness import DEADLINE_S, PYTHON, SECRETS, Launcher, agent_toml
from tests.e2e.test_dashboard import (
    CHROMIUM,
    PHONE,
    WIDE,
    Chrome,
    chrome,
    event_items,
    log_in,
    open_tab,
    row_of,
    screenshot,
    start,
)

__all__ = ["chrome"]  # the module's one Chromium, shared with test_dashboard's fixture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed; .ci/run installs it"),
]

AGENT: Final = Path(__file__).with_name("dashboard_agent.py")
RICH: Final = (
    f'[agents.rich]\ncommand = ["{PYTHON}", "{AGENT}"]\nformat = "claude"\nrestart = "no"\n'
)
AXE: Final = "vendor/axe.min.js"
AXE_BLOCKING: Final = ("serious", "critical")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2 A/AA and
    best practices). axe is served from the dashboard's own vendor folder: the page's CSP
    lets it load like the page's other scripts."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=AXE)
        page.wait_for_function("typeof window.axe !== 'undefined'")
    results = page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in results["violations"]
        if v["impact"] in AXE_BLOCKING
    ]


async def prompt(client: Client, session: str, text: str) -> None:
    await client.request("session.input", session=session, text=text)


async def test_a_message_is_markdown_and_markup_in_it_never_runs(
    hived: Launcher, chrome: Chrome
) -> None:
    port, config = hived.config(body=RICH)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        session = await start(operator, "rich", name="md")
        await prompt(operator, session, "markdown please")
        for viewport, name in ((WIDE, "wide"), (PHONE, "phone")):
            async with open_tab(chrome, daemon, viewport) as tab:

                def renders(page: Page, name: str = name) -> None:
                    log_in(page, "viewer")
                    row_of(page, session).click()
                    message = event_items(page, "message", "I will:").locator(".markdown")
                    expect(message.locator("h1")).to_have_text("Plan")
                    expect(message.locator("ol > li")).to_have_count(2)
                    expect(message.locator("strong")).to_have_text("the bug")
                    expect(message.locator("pre code")).to_contain_text("def hello():")
                    expect(message.locator("pre code .hljs-keyword").first).to_have_text("def")
                    link = message.locator("a")
                    expect(link).to_have_attribute("href", "https://example.org/docs")
                    expect(link).to_have_attribute("rel", "noopener noreferrer")
                    # The script tag and the image with a handler: shown as the text they are,
                    # never run.
                    expect(message).to_contain_text("<script>window.pwned = 1</script>")
                    expect(message).to_contain_text('<img src=x onerror="window.pwned = 2">')
                    expect(page.locator("#events script, #events img")).to_have_count(0)
                    assert page.evaluate("typeof window.pwned") == "undefined"
                    message.scroll_into_view_if_needed()
                    screenshot(page, f"{name}-markdown")

                await tab.run(renders)


async def test_tool_calls_are_cards_and_edits_are_diffs(hived: Launcher, chrome: Chrome) -> None:
    port, config = hived.config(body=RICH)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        session = await start(operator, "rich", name="edits")
        await prompt(operator, session, "edit the greeting")
        for viewport, name in ((WIDE, "wide"), (PHONE, "phone")):
            async with open_tab(chrome, daemon, viewport) as tab:

                def shows_cards(
                    page: Page, name: str = name, width: int = viewport["width"]
                ) -> None:
                    log_in(page, "viewer")
                    row_of(page, session).click()
                    expect(event_items(page, "message", "Edited.")).to_have_count(1)
                    # One card per call: its result is folded into it, not a row of its own.
                    expect(event_items(page, "tool_use")).to_have_count(3)
                    expect(event_items(page, "tool_result")).to_have_count(0)
                    edit = event_items(page, "tool_use", "Edit")
                    expect(edit.locator(".arg")).to_have_text("/srv/app/hello.py")
                    expect(edit.locator(".status")).to_have_text("✓ done")
                    expect(edit.locator(".diff-del")).to_have_text("-    return 'hi'\n")
                    expect(edit.locator(".diff-add")).to_have_text("+    return 'hello, world'\n")
                    expect(edit.locator(".diff-hunk")).to_have_text("@@ -1,2 +1,2 @@\n")
                    expect(edit.locator(".diff-stat")).to_contain_text("+1 −1")
                    write = event_items(page, "tool_use", "Write")
                    expect(write.locator(".diff-add")).to_have_text(["+# Notes\n", "+new file\n"])
                    # The result is folded; opened, its terminal colours are colours.
                    bash = event_items(page, "tool_use", "pytest -q")
                    result = bash.locator("details")
                    expect(result.locator("summary")).to_have_text("result: 1 line")
                    expect(result.locator("pre.result")).to_be_hidden()
                    result.locator("summary").click()
                    expect(result.locator(".ansi-fg-2")).to_have_text("3 passed")
                    assert "\x1b" not in result.inner_text()
                    assert "[32m" not in result.inner_text()
                    thinking = event_items(page, "thinking").locator("details")
                    expect(thinking).not_to_have_attribute("open", "")
                    assert page.evaluate("document.documentElement.scrollWidth") <= width
                    edit.scroll_into_view_if_needed()
                    screenshot(page, f"{name}-diff")
                    assert axe_violations(page) == []

                await tab.run(shows_cards)


async def test_questions_elicitations_and_always_allow_are_answered_on_the_page(
    hived: Launcher, chrome: Chrome
) -> None:
    port, config = hived.config(body=RICH)
    daemon = await hived.start(config, port=port)
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        open_tab(chrome, daemon, PHONE) as tab,
    ):
        session = await start(operator, "rich", name="asks")
        await prompt(operator, session, "ask me")

        def answers_a_question(page: Page) -> None:
            log_in(page, "operator")
            expect(row_of(page, session).locator("td.activity")).to_have_text("has a question")
            row_of(page, session).click()
            asked = event_items(page, "permission_request")
            expect(asked.locator("legend")).to_have_text("Colour: Which colour do you prefer?")
            expect(asked.locator("label.option")).to_have_count(2)
            screenshot(page, "phone-question")
            assert axe_violations(page) == []
            asked.get_by_label("Blue").check()
            asked.locator("button[type=submit]").click()
            expect(asked.locator(".answer")).to_have_text("answered: Blue")
            said = json.dumps({"Which colour do you prefer?": "Blue"})
            expect(event_items(page, "message", f"You answered {said}")).to_have_count(1)

        await tab.run(answers_a_question)
        await prompt(operator, session, "elicit a ticket")

        def accepts_an_elicitation(page: Page) -> None:
            asked = event_items(page, "permission_request").filter(has_text="tickets")
            expect(asked.locator(".markdown strong")).to_have_text("ticket")
            asked.get_by_label("Ticket (required)").fill("ABC-1")
            asked.get_by_label("Urgent").check()
            screenshot(page, "phone-elicitation")
            asked.locator("button[type=submit]").click()
            expect(asked.locator(".answer")).to_have_text("accepted")
            said = json.dumps({"ticket": "ABC-1", "urgent": True})
            expect(event_items(page, "message", f"Elicitation accept: {said}")).to_have_count(1)

        await tab.run(accepts_an_elicitation)
        await prompt(operator, session, "always allow it")

        def always_allows(page: Page) -> None:
            asked = event_items(page, "permission_request").filter(has_text="make test")
            asked.locator("button.always").click()
            expect(asked.locator(".answer")).to_have_text("always allowed")
            expect(event_items(page, "message", "Bash allow, with a rule kept")).to_have_count(1)
            # The fake Claude of the other tests offers no rule: no "always" there.
            expect(page.locator("#events button.always")).to_have_count(0)

        await tab.run(always_allows)


SCROLL_STEPS: Final = """async (list, count) => {
  const frame = () => new Promise((done) => requestAnimationFrame(() => done()));
  const took = [];
  for (let i = 0; i < count; i++) {
    const began = performance.now();
    list.scrollTop += list.clientHeight;
    await frame();
    const deadline = began + 5000;
    while (list.querySelector("li.pending") && performance.now() < deadline) await frame();
    took.push(performance.now() - began);
  }
  return took;
}"""
"""Scroll down a screen ``count`` times; how long each took until nothing was left loading."""


MOVED_OFF_THE_START: Final = """() => {
  const first = document.querySelector("#events li[data-seq]");
  return first !== null && Number(first.dataset.seq) > 1;
}"""
"""True once the list draws rows other than those from the session's start."""


async def test_a_100k_event_session_scrolls_to_its_start_in_under_2_s(
    hived: Launcher, chrome: Chrome
) -> None:
    lines = 100_000
    port, config = hived.config(body=agent_toml("flood", "misbehave.py", "flood", str(lines)))
    daemon = await hived.start(config, port=port)
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin,
    ):
        flood = await start(operator, "flood", name="flood")
        # Every line is kept before the page looks (polled: the store says when, not an event).
        with trio.fail_after(DEADLINE_S * 6):
            while True:
                page = await operator.request("session.events", session=flood, since=lines)
                if page["events"]:
                    break
                await trio.sleep(0.2)

        def scrolls(page: Page) -> float:
            log_in(page, "viewer")
            page.click("#all")
            row_of(page, flood).click()
            expect(event_items(page, "text", f"line {lines - 1} ")).to_be_visible()
            drawn = page.locator("#events li[data-seq]")
            assert drawn.count() <= 300  # only what is on screen and near it
            began = time.monotonic()
            page.click("#to-start")
            expect(event_items(page, "text", "line 0 ")).to_be_in_viewport()
            took = time.monotonic() - began
            seqs = page.eval_on_selector_all(
                "#events li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
            )
            assert seqs[0] == 1
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) <= 300
            # The middle, by dragging the scroll position: drawn from its own page of events.
            page.locator("#events").evaluate("list => { list.scrollTop = list.scrollHeight / 2 }")
            # The scroll event comes a frame later: until then the rows from the start are drawn.
            page.wait_for_function(MOVED_OFF_THE_START)
            expect(page.locator("#events li.pending")).to_have_count(0)
            middle = page.eval_on_selector_all(
                "#events li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
            )
            assert 30_000 < middle[0] < 70_000
            # Scrolling on from there, a screen at a time: each step drawn, none left loading.
            steps = page.locator("#events").evaluate(SCROLL_STEPS, 60)
            steps.sort()
            print(f"scroll steps: median {steps[len(steps) // 2]:.1f} ms, max {steps[-1]:.1f} ms")
            assert steps[-1] < 1000
            page.click("#to-end")
            expect(event_items(page, "text", f"line {lines - 1} ")).to_be_in_viewport()
            return took

        for viewport in (WIDE, PHONE):
            async with open_tab(chrome, daemon, viewport) as tab:
                took = await tab.run(scrolls)
                print(f"100k events at {viewport}: to the first one in {took:.3f} s")
                assert took < 2.0
                viewers = [
                    c
                    for c in (await admin.request("connections"))["connections"]
                    if c["role"] == "viewer"
                ]
                assert viewers
                for viewer in viewers:  # the last tab's may still be closing
                    assert viewer["messages_out"] < 2000, "the page was sent the whole session"


FOCUS_RING: Final = """element => {
  const style = getComputedStyle(element);
  return {style: style.outlineStyle, width: parseFloat(style.outlineWidth)};
}"""


async def test_axe_finds_nothing_serious_and_focus_is_visible(
    hived: Launcher, chrome: Chrome
) -> None:
    """axe-core over the page's states at both sizes: logged out, the list with a session that
    asks permission with the start form and costs open, that session open. Keyboard focus has
    a visible ring, and the states that need a person say so in words, not by colour alone."""
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        await start(operator, "claude", prompt="hello", name="done")
        for viewport, name in ((WIDE, "wide"), (PHONE, "phone")):
            asker = await start(
                operator, "claude", prompt="this needs permission", name=f"asker-{name}"
            )
            async with open_tab(chrome, daemon, viewport) as tab:

                def is_accessible(page: Page, asker: str = asker, name: str = name) -> None:
                    expect(page.locator("#login")).to_be_visible()
                    assert axe_violations(page) == []
                    log_in(page, "operator")
                    row = row_of(page, asker)
                    expect(row.locator("td.activity")).to_have_text("asks permission")
                    expect(row.locator(".needs")).to_have_text("needs you")
                    page.click("#costs summary")
                    page.click("#start summary")
                    assert axe_violations(page) == []
                    page.evaluate("document.activeElement.blur()")  # keys go to the page
                    page.keyboard.press("j")  # the newest first: this asker
                    expect(row).to_be_focused()
                    ring = row.evaluate(FOCUS_RING)
                    assert ring["style"] != "none"
                    assert ring["width"] >= 2
                    page.keyboard.press("n")  # opens the one that needs a person
                    expect(page.locator("#detail-name")).to_have_text(f"asker-{name}")
                    asked = event_items(page, "permission_request")
                    expect(asked.locator("button.allow")).to_be_visible()
                    asked.locator("button.allow").focus()
                    page.keyboard.press("Tab")  # on to the reason field, by keyboard
                    expect(asked.locator("input.reason")).to_be_focused()
                    ring = asked.locator("input.reason").evaluate(FOCUS_RING)
                    assert ring["style"] != "none"
                    assert ring["width"] >= 2
                    # The call's card says in words what it waits for.
                    card = event_items(page, "tool_use", "echo hello from fake claude")
                    expect(card.locator(".status")).to_have_text("⏸ asks permission")
                    assert axe_violations(page) == []
                    asked.locator("button.allow").click()
                    expect(asked.locator(".answer")).to_have_text("allowed")
                    expect(card.locator(".status")).to_have_text("✓ done")

                await tab.run(is_accessible)


def draw_card(page: Page, use: dict[str, Any], result: dict[str, Any] | None) -> None:
    """A tool call's card, as the page draws it, in a list of its own on the page."""
    page.evaluate(
        """([use, result]) => {
          const list = document.createElement("ol");
          list.id = "cards";
          const item = document.createElement("li");
          item.append(toolCard({use, latest: use, result}));
          list.append(item);
          document.body.append(list);
        }""",
        [use, result],
    )


async def test_codex_file_changes_acp_diffs_and_multiedit_show_as_diffs(
    hived: Launcher, chrome: Chrome
) -> None:
    """The event data of each driver's edits, made by the drivers' own code, drawn by the page."""
    codex_item = {
        "type": "fileChange",
        "id": "item_1",
        "status": "completed",
        "changes": [
            {
                "path": "src/app.py",
                "kind": {"type": "update", "move_path": None},
                "diff": "@@ -1 +1 @@\n-x = 1\n+x = 2\n",
            }
        ],
    }
    codex_use = {"seq": 1, "ts": "2026-12-05T00:00:00.000Z", "data": tool_use_data(codex_item)}
    codex_done = {"seq": 2, "ts": "2026-12-05T00:00:01.500Z", "data": tool_result_data(codex_item)}
    kind, acp_data = ToolCalls().event(
        {
            "sessionUpdate": "tool_call",
            "toolCallId": "call_1",
            "title": "Edit a.ts",
            "kind": "edit",
            "status": "completed",
            "rawInput": {"path": "/w/a.ts"},
            "content": [
                {
                    "type": "diff",
                    "path": "/w/a.ts",
                    "oldText": "let a = 1;\n",
                    "newText": "let a = 2;\n",
                }
            ],
        }
    )
    assert kind == "tool_result"
    acp_result = {"seq": 3, "ts": "2026-12-05T00:00:02.000Z", "data": acp_data}
    multi_edit = {
        "seq": 4,
        "ts": "2026-12-05T00:00:03.000Z",
        "data": {
            "id": "toolu_1",
            "name": "MultiEdit",
            "input": {
                "file_path": "/w/b.rs",
                "edits": [
                    {"old_string": "fn a() {}", "new_string": "fn a() -> u8 { 1 }"},
                    {"old_string": "let x = 1;", "new_string": "let x = 2;"},
                ],
            },
        },
    }
    daemon = await hived.start()
    async with open_tab(chrome, daemon) as tab:

        def draws(page: Page) -> None:
            expect(page.locator("#login")).to_be_visible()  # the page's scripts are loaded
            draw_card(page, codex_use, codex_done)
            card = page.locator("#cards li").last
            expect(card.locator(".tool")).to_have_text("fileChange")
            expect(card.locator(".arg")).to_have_text("src/app.py")
            expect(card.locator(".status")).to_have_text("✓ done")
            expect(card.locator(".took")).to_have_text("1.5 s")
            expect(card.locator(".diff-del")).to_have_text("-x = 1\n")
            expect(card.locator(".diff-add")).to_have_text("+x = 2\n")
            expect(card.locator(".diff-add .hljs-number")).to_have_text("2")  # syntax colours
            # An ACP call seen first at its end: its card from the result alone.
            draw_card(page, acp_result, acp_result)
            card = page.locator("#cards li").last
            expect(card.locator(".diff-file")).to_contain_text("/w/a.ts")
            expect(card.locator(".diff-del")).to_have_text("-let a = 1;\n")
            expect(card.locator(".diff-add")).to_have_text("+let a = 2;\n")
            draw_card(page, multi_edit, None)
            card = page.locator("#cards li").last
            expect(card.locator(".status")).to_have_text("… running")
            expect(card.locator(".diff")).to_have_count(2)
            expect(card.locator(".diff-stat").first).to_contain_text("edit 1 of 2")
            expect(card.locator(".diff-add").last).to_have_text("+let x = 2;\n")

        await tab.run(draws)
