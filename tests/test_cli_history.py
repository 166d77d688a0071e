"""hivectl's history commands as people read them: a search hit on one line."""

from __future__ import annotations

from hived.cli.history import hit_line
from hived.cli.render import COLOURS, RESET, Painter

HIT = {
    "ts": "2026-12-05T23:28:21.123Z",
    "session": "01M948K0X8HVABCDEFGHJKMNPQ",
    "name": "claude-abc",
    "seq": 3,
    "kind": "tool_use",
    "snippet": "Bash\nls -la\nrm it",
    "marks": [[5, 7], [15, 17]],
}


def test_a_hit_with_line_breaks_reads_as_one_line_with_its_words_marked() -> None:
    line = hit_line(HIT, Painter(enabled=False))
    assert line == "2026-12-05T23:28:21 claude-abc#3 tool_use Bash ls -la rm it"
    bold = hit_line(HIT, Painter(enabled=True))
    assert f"{COLOURS['bold']}ls{RESET}" in bold
    assert f"{COLOURS['bold']}it{RESET}" in bold
    assert "\n" not in bold


def test_other_control_characters_in_a_hit_stay_escaped() -> None:
    hit = {**HIT, "snippet": "a\x1b]52;c;cGF3bg==\x07\rb", "marks": []}
    assert hit_line(hit, Painter(enabled=False)).endswith(
        "tool_use a\\x1b]52;c;cGF3bg==\\x07\\x0db"
    )
