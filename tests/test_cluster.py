"""The cluster's sans-IO parts: keys and entry ids, envelopes, liveness and the merged view."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hived.cluster.envelope import Command, EnvelopeError, Reply
from hived.cluster.keys import Keys, MirrorAnswer, Mode, Status, entry_id, entry_seq, mirror_args
from hived.cluster.liveness import Change, Liveness, heartbeat_ttl_ms
from hived.cluster.view import merge
from hived.core.messages import Sessions
from hived.core.sessions import UNREACHABLE

SANS_IO = ("keys", "envelope", "liveness", "view")


@pytest.mark.parametrize("module", SANS_IO)
def test_the_sans_io_modules_touch_neither_trio_nor_the_engine(module: str) -> None:
    path = Path(__file__).parent.parent / "hived" / "cluster" / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "coredis", "anyio", "socket", "asyncio"}


def test_entry_ids_are_seqs_and_only_seqs() -> None:
    assert entry_id(42) == "42-0"
    assert entry_seq("42-0") == 42
    for bad in ("42", "42-1", "x-0", "1733-7"):
        with pytest.raises(ValueError, match="not a mirrored entry id"):
            entry_seq(bad)


def test_session_topics_are_shared_and_sessions_is_per_node() -> None:
    keys = Keys("p")
    assert keys.stream("session/01J", "a") == keys.stream("session/01J", "b") == "p:s:session/01J"
    assert keys.stream("sessions", "a") == "p:s:sessions@a"
    assert keys.meta("sessions", "b") == "p:m:sessions@b"
    assert keys.commands("a") != keys.commands("b")


def test_mirror_args_and_answers() -> None:
    args = mirror_args("a", 41, Mode.STRICT, True, 3, [(4, "f4"), (5, "f5")])
    assert args == ["a", 41, "strict", "1", 3, 4, "f4", 5, "f5"]
    assert MirrorAnswer.parse(["gap", 7, "41"]) == MirrorAnswer(Status.GAP, 7, 41)
    assert MirrorAnswer.parse([b"ok", b"-1", b""]) == MirrorAnswer(Status.OK, -1, 0)
    for bad in (None, "ok", ["ok", 1], ["what", 1, "4"], ["ok", 1, "not a number"]):
        with pytest.raises(ValueError, match="unexpected answer from the mirror script"):
            MirrorAnswer.parse(bad)


def test_a_command_goes_through_the_engine_and_back_unchanged() -> None:
    command = Command("c1", "a", '{"type":"session.stop","session":"X"}', "alice", "operator", 99)
    assert Command.decode(command.encode()) == command
    assert Reply.decode(Reply(result={"session": "X"}).encode()) == Reply(result={"session": "X"})
    refused = Reply(code="forbidden", message="needs operator")
    assert Reply.decode(refused.encode()) == refused


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"id": "c1"}', "command:"),
        (
            b'{"id": 1, "origin": "a", "frame": "{}", "token_name": "t", "role": "viewer",'
            b' "deadline_ms": 1}',
            "id is not a string",
        ),
        (
            b'{"id": "1", "origin": "a", "frame": "{}", "token_name": "t", "role": "viewer",'
            b' "deadline_ms": true}',
            "deadline_ms is not an integer",
        ),
    ],
)
def test_a_bad_command_is_an_envelope_error_naming_what(raw: bytes, what: str) -> None:
    with pytest.raises(EnvelopeError, match=what):
        Command.decode(raw)


def test_a_bad_reply_is_an_envelope_error() -> None:
    for raw in (b"{}", b'{"error": "x"}', b'{"result": 1, "more": 2}'):
        with pytest.raises(EnvelopeError, match="reply"):
            Reply.decode(raw)


def test_liveness_reports_each_change_once() -> None:
    seen = Liveness("a")
    assert seen.observe({"a": False, "b": True, "c": False}) == [Change("c", False)]
    assert seen.observe({"b": True, "c": False}) == []
    assert seen.observe({"b": False, "c": True}) == [Change("b", False), Change("c", True)]
    assert seen.is_alive("a")
    assert seen.is_alive("c")
    assert not seen.is_alive("b")
    assert not seen.is_alive("never-seen")


def test_a_silent_node_is_seen_within_two_heartbeats() -> None:
    # The key outlives one missed beat; a peer looking every half interval sees it expire by
    # then.
    assert heartbeat_ttl_ms(2.0) == 3000
    assert heartbeat_ttl_ms(2.0) + 1000 <= 2 * 2000


def summary(sid: str, state: str, agent: str = "claude") -> dict[str, object]:
    return {"id": sid, "state": state, "agent": agent, "name": f"n-{sid}"}


def test_the_view_merges_every_node_newest_first_naming_each_node() -> None:
    local = [summary("01B", "RUNNING")]
    remote = {
        "b": (True, [summary("01C", "WAITING"), summary("01A", "EXITED")]),
        "c": (False, [summary("01D", "WORKING"), summary("01E", "FAILED")]),
    }
    shown = merge(Sessions(), local, "a", remote)
    assert [(s["id"], s["node"], s["state"]) for s in shown] == [
        ("01D", "c", UNREACHABLE),
        ("01C", "b", "WAITING"),
        ("01B", "a", "RUNNING"),
    ]
    everything = merge(Sessions(all=True, limit=3), local, "a", remote)
    assert [s["id"] for s in everything] == ["01E", "01D", "01C"]
    after = merge(Sessions(all=True, before="01d"), local, "a", remote)
    assert [s["id"] for s in after] == ["01C", "01B", "01A"], "a next page, of every node"
    assert [s["state"] for s in merge(Sessions(all=True), [], "a", remote) if s["node"] == "c"] == [
        "FAILED",
        UNREACHABLE,
    ], "an ended session of a silent node keeps its state"


def test_the_view_filters_remote_sessions_like_local_ones() -> None:
    remote = {"b": (True, [summary("01C", "WAITING", "codex"), summary("01A", "RUNNING")])}
    assert [s["id"] for s in merge(Sessions(agent="codex"), [], "a", remote)] == ["01C"]
    assert [s["id"] for s in merge(Sessions(state="RUNNING"), [], "a", remote)] == ["01A"]
    silent = {"b": (False, remote["b"][1])}
    assert [s["state"] for s in merge(Sessions(), [], "a", silent)] == [UNREACHABLE, UNREACHABLE]
    assert merge(Sessions(state="RUNNING"), [], "a", silent) == []


def test_the_unreachable_filter_finds_only_the_silent_nodes_live_sessions() -> None:
    remote = {
        "b": (True, [summary("01B", "RUNNING")]),
        "c": (False, [summary("01C", "WAITING"), summary("01D", "EXITED")]),
    }
    local = [summary("01A", "RUNNING")]
    found = merge(Sessions(state=UNREACHABLE, all=True), [], "a", remote)
    assert [(s["id"], s["node"]) for s in found] == [("01C", "c")]
    running = merge(Sessions(state="RUNNING"), local, "a", remote)
    assert [s["id"] for s in running] == ["01B", "01A"], "a silent node's session is not RUNNING"
