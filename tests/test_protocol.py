"""The wire protocol in hived/core: frames to requests, replies to frames, roles, close codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from cattrs.errors import IterableValidationError

from hived.core import convert, protocol
from hived.core.auth import TokenTable
from hived.core.config import TokenConfig
from hived.core.errors import ProtocolError
from hived.core.events import KINDS
from hived.core.messages import (
    PushKeys,
    PushSubscription,
    Search,
    SessionExport,
    SessionForget,
    UsageLedger,
)
from hived.core.protocol import (
    ADMIN_ONLY,
    ERROR_CODES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_HELLO_CHARS,
    MAX_PROBLEMS,
    REQUEST_TYPES,
    ROLE_REQUIRED,
    Agents,
    BaseRequest,
    Caller,
    CloseCode,
    ConfigReload,
    ConnectionKick,
    Connections,
    DaemonRestart,
    DaemonStop,
    Hello,
    HelloOutcome,
    Notifications,
    NotifyTest,
    Ping,
    PushKey,
    PushSubscribe,
    PushUnsubscribe,
    SessionAnswer,
    SessionApprove,
    SessionEvents,
    SessionInput,
    SessionInterrupt,
    SessionRestart,
    SessionResume,
    Sessions,
    SessionStart,
    SessionStop,
    Status,
    Subscribe,
    Unsubscribe,
    Watch,
    check_hello,
    close_reason,
    error_frame,
    forbidden_reason,
    parse_frame,
    parse_server_frame,
    request_frame,
    result_frame,
    welcome_frame,
)
from tests.test_auth import ALICE_SECRET, BOT_SECRET, token

PROTOCOL_MD = Path(__file__).parent.parent / "docs" / "protocol.md"

SAMPLES: list[tuple[str, BaseRequest]] = [
    ('{"type": "hello", "token": "s3cret"}', Hello(token="s3cret")),
    (
        '{"type": "subscribe", "id": 7, "topic": "session/01JDX4", "since": 41}',
        Subscribe(topic="session/01JDX4", since=41, id=7),
    ),
    ('{"type": "subscribe", "topic": "sessions", "since": null}', Subscribe(topic="sessions")),
    ('{"type": "unsubscribe", "id": "u1", "topic": "sessions"}', Unsubscribe("sessions", id="u1")),
    ('{"type": "sessions", "id": 1}', Sessions(id=1)),
    (
        '{"type": "sessions", "state": "RUNNING", "agent": "claude", "all": true,'
        ' "since": "2026-11-26T08:00:00Z", "limit": 50}',
        Sessions(state="RUNNING", agent="claude", all=True, since="2026-11-26T08:00:00Z", limit=50),
    ),
    ('{"type": "sessions", "state": "waiting"}', Sessions(state="WAITING")),
    ('{"type": "sessions", "state": "unreachable"}', Sessions(state="UNREACHABLE")),
    ('{"type": "session.start", "id": 2, "agent": "claude"}', SessionStart("claude", id=2)),
    (
        '{"type": "session.start", "agent": "claude", "prompt": "run the tests",'
        ' "args": ["--model", "opus"], "cwd": "/srv/work/app", "name": "tests"}',
        SessionStart(
            "claude", "run the tests", ("--model", "opus"), cwd="/srv/work/app", name="tests"
        ),
    ),
    (
        '{"type": "session.input", "id": 3, "session": "01JDX4", "text": "go on"}',
        SessionInput("01JDX4", "go on", id=3),
    ),
    (
        '{"type": "session.approve", "session": "01JDX4", "request_id": "req-1", "allow": false,'
        ' "message": "not on prod"}',
        SessionApprove("01JDX4", "req-1", False, "not on prod"),
    ),
    (
        '{"type": "session.approve", "session": "01JDX4", "request_id": "req-2", "allow": true,'
        ' "always": true, "input": {"command": "ls"}}',
        SessionApprove("01JDX4", "req-2", True, always=True, input={"command": "ls"}),
    ),
    (
        '{"type": "session.answer", "session": "01JDX4", "request_id": "q-1",'
        ' "answers": {"Which color?": "Blue"}}',
        SessionAnswer("01JDX4", "q-1", answers={"Which color?": "Blue"}),
    ),
    (
        '{"type": "session.answer", "session": "01JDX4", "request_id": "e-1",'
        ' "action": "accept", "content": {"name": "x"}}',
        SessionAnswer("01JDX4", "e-1", action="accept", content={"name": "x"}),
    ),
    ('{"type": "session.interrupt", "session": "01JDX4"}', SessionInterrupt("01JDX4")),
    ('{"type": "session.stop", "session": "01JDX4"}', SessionStop("01JDX4")),
    ('{"type": "session.restart", "session": "01JDX4"}', SessionRestart("01JDX4")),
    (
        '{"type": "session.resume", "session": "01JDX4", "prompt": "go on"}',
        SessionResume("01JDX4", prompt="go on"),
    ),
    (
        '{"type": "session.events", "session": "01JDX4", "since": 0, "limit": 10000}',
        SessionEvents("01JDX4", since=0, limit=10000),
    ),
    (
        '{"type": "search", "query": "migration", "session": "01JDX4", "kinds": ["message"], '
        '"since": "2026-12-01T00:00:00Z", "limit": 50, "cursor": "120"}',
        Search(
            "migration",
            session="01JDX4",
            kinds=("message",),
            since="2026-12-01T00:00:00Z",
            limit=50,
            cursor="120",
        ),
    ),
    (
        '{"type": "usage", "id": 5, "by": "day", "since": "2026-12-01T00:00:00Z", "until": null}',
        UsageLedger(by="day", since="2026-12-01T00:00:00Z", id=5),
    ),
    (
        '{"type": "session.export", "session": "01JDX4", "format": "md", "cursor": 2000}',
        SessionExport("01JDX4", format="md", cursor=2000),
    ),
    ('{"type": "session.forget", "session": "01JDX4"}', SessionForget(session="01JDX4")),
    ('{"type": "status", "id": 9}', Status(id=9)),
    ('{"type": "connections"}', Connections()),
    (
        '{"type": "connection.kick", "id": 4, "connection": 12, "reason": "bye"}',
        ConnectionKick(12, "bye", id=4),
    ),
    ('{"type": "config.reload"}', ConfigReload()),
    ('{"type": "daemon.stop", "id": "stop"}', DaemonStop(id="stop")),
    ('{"type": "daemon.restart"}', DaemonRestart()),
    ('{"type": "ping", "id": 0}', Ping(id=0)),
    ('{"type": "agents", "id": 5}', Agents(id=5)),
    ('{"type": "notifications", "id": 6, "limit": 20}', Notifications(limit=20, id=6)),
    ('{"type": "notify.test", "id": 7, "rule": "phone"}', NotifyTest(rule="phone", id=7)),
    (
        '{"type": "watch", "id": 8, "session": "01J", "focused": false}',
        Watch(session="01J", focused=False, id=8),
    ),
    ('{"type": "push.key", "id": 9}', PushKey(id=9)),
    (
        '{"type": "push.subscribe", "id": 10, "subscription": {"endpoint": "https://push.example/x", "expirationTime": null, "keys": {"p256dh": "BKx", "auth": "a1"}}}',
        PushSubscribe(
            subscription=PushSubscription("https://push.example/x", PushKeys("BKx", "a1")), id=10
        ),
    ),
    (
        '{"type": "push.unsubscribe", "id": 11, "endpoint": "https://push.example/x"}',
        PushUnsubscribe(endpoint="https://push.example/x", id=11),
    ),
]


@pytest.mark.parametrize(("text", "request_"), SAMPLES, ids=[s[0][10:40] for s in SAMPLES])
def test_every_sample_frame_parses_to_its_request(text: str, request_: BaseRequest) -> None:
    assert parse_frame(text) == request_


def test_the_samples_cover_every_request_type() -> None:
    assert {request.type for _, request in SAMPLES} == set(REQUEST_TYPES)


@pytest.mark.parametrize(("text", "request_"), SAMPLES, ids=[s[0][10:40] for s in SAMPLES])
def test_request_frame_round_trips_through_parse_frame(text: str, request_: BaseRequest) -> None:
    frame = request_frame(request_)
    assert orjson.loads(frame)["type"] == request_.type
    assert parse_frame(frame) == request_


def test_request_frame_leaves_out_unset_fields() -> None:
    assert orjson.loads(request_frame(Subscribe("sessions"))) == {
        "type": "subscribe",
        "topic": "sessions",
    }


def test_hello_repr_does_not_show_the_secret() -> None:
    assert "s3cret" not in repr(parse_frame('{"type": "hello", "token": "s3cret"}'))


def test_wire_type_is_readable_from_an_instance() -> None:
    for wire_type, cls in REQUEST_TYPES.items():
        assert cls.type == wire_type
    assert parse_frame('{"type": "session.stop", "session": "a"}').type == "session.stop"


# -- bad frames ------------------------------------------------------------------------------


def reject(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_frame(text)
    return info.value


@pytest.mark.parametrize("text", ["", "not json", '{"type": "ping"', '{"type": "ping"} x', "1e999"])
def test_text_that_is_not_json_is_bad_json_with_its_position(text: str) -> None:
    error = reject(text)
    assert error.code == "bad_json"
    assert error.request_id is None
    assert re.search(r"at line 1, column \d+", error.message)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('[{"type": "ping", "id": 1}]', "got a list"),
        ("42", "got 42"),
        ('"ping"', 'got "ping"'),
        ("null", "got null"),
    ],
)
def test_a_frame_that_is_not_one_object_is_bad_request(text: str, found: str) -> None:
    error = reject(text)
    assert error.code == "bad_request"
    assert error.request_id is None
    assert error.message == f"expected one JSON object (a request) per frame, {found}"


def test_missing_type_is_bad_request_listing_the_known_types_with_the_id() -> None:
    error = reject('{"id": 5, "topic": "sessions"}')
    assert (error.code, error.request_id) == ("bad_request", 5)
    assert error.message.startswith("type: required, but missing; known: hello, subscribe,")


@pytest.mark.parametrize(("value", "shown"), [("5", "5"), ("null", "null"), ('["ping"]', "a list")])
def test_a_type_that_is_not_a_string_is_bad_request(value: str, shown: str) -> None:
    error = reject(f'{{"type": {value}, "id": "abc"}}')
    assert (error.code, error.request_id) == ("bad_request", "abc")
    assert error.message == f"type: expected a message type (a string), got {shown}"


def test_unknown_type_names_it_and_the_known_types() -> None:
    error = reject('{"type": "sesions", "id": 8}')
    assert (error.code, error.request_id) == ("unknown_type", 8)
    assert error.message == "unknown message type 'sesions'; known: " + ", ".join(REQUEST_TYPES)


def test_unknown_field_is_named_with_the_known_fields() -> None:
    error = reject('{"type": "subscribe", "id": 1, "topic": "sessions", "sinse": 3}')
    assert (error.code, error.request_id) == ("bad_request", 1)
    assert error.message == (
        "subscribe.sinse: unknown field; known fields: type, id, topic, since, epoch"
    )


def test_connection_kick_takes_no_second_id_for_its_target() -> None:
    error = reject('{"type": "connection.kick", "id": 3}')
    assert error.message == "connection.kick.connection: required, but missing"


def test_missing_field_is_named() -> None:
    error = reject('{"type": "session.input", "id": "x", "session": "01J"}')
    assert (error.code, error.request_id) == ("bad_request", "x")
    assert error.message == "session.input.text: required, but missing"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        # a string field
        ({"type": "hello", "token": 12345}, 'hello.token: expected a non-empty string, got 12345'),
        ({"type": "session.input", "session": "a", "text": None}, "session.input.text: expected a string, got null"),
        # an optional string field
        ({"type": "session.start", "agent": "a", "prompt": 1}, "session.start.prompt: expected a string, got 1"),
        # a bool field
        ({"type": "session.approve", "session": "a", "request_id": "r", "allow": "yes"}, 'session.approve.allow: expected true or false, got "yes"'),
        ({"type": "sessions", "all": 1}, "sessions.all: expected true or false, got 1"),
        # an integer field
        ({"type": "subscribe", "topic": "sessions", "since": "five"}, 'subscribe.since: expected an integer ≥ 0, got "five"'),
        ({"type": "subscribe", "topic": "sessions", "since": 4.5}, "subscribe.since: expected an integer ≥ 0, got 4.5"),
        ({"type": "connection.kick", "connection": "3"}, 'connection.kick.connection: expected a connection id (an integer ≥ 0), got "3"'),
        # bool where an integer is wanted
        ({"type": "subscribe", "topic": "sessions", "since": True}, "subscribe.since: expected an integer ≥ 0, got true"),
        ({"type": "session.events", "session": "a", "limit": False}, "session.events.limit: expected an integer from 1 to 10000, got false"),
        # a list field
        ({"type": "session.start", "agent": "a", "args": "--fast"}, 'session.start.args: expected a list, got "--fast"'),
        ({"type": "session.start", "agent": "a", "args": ["ok", 2]}, "session.start.args[1]: expected a string without NUL characters, got 2"),
        # value rules
        ({"type": "subscribe", "topic": "sessions", "since": -1}, "subscribe.since: expected an integer ≥ 0, got -1"),
        ({"type": "subscribe", "topic": "events"}, 'subscribe.topic: expected "sessions" or "session/<id>", got "events"'),
        ({"type": "unsubscribe", "topic": "session/"}, 'unsubscribe.topic: expected "sessions" or "session/<id>", got "session/"'),
        ({"type": "subscribe", "topic": "session/a/b"}, 'subscribe.topic: expected "sessions" or "session/<id>", got "session/a/b"'),
        ({"type": "subscribe", "topic": "session/" + "x" * 65}, 'subscribe.topic: expected "sessions" or "session/<id>", got "session/' + "x" * 49 + '..."'),
        ({"type": "sessions", "limit": 10001}, "sessions.limit: expected an integer from 1 to 10000, got 10001"),
        ({"type": "sessions", "limit": 0}, "sessions.limit: expected an integer from 1 to 10000, got 0"),
        ({"type": "sessions", "since": "last week"}, 'sessions.since: expected an ISO 8601 time such as "2026-11-26T08:00:00Z", got "last week"'),
        ({"type": "sessions", "state": "runing"}, 'sessions.state: expected a session state (STARTING, RUNNING, WORKING, WAITING, STALLED, STOPPING, EXITED, FAILED, BACKOFF, FATAL, LOST, UNREACHABLE), got "runing"'),
        ({"type": "session.start", "agent": ""}, 'session.start.agent: expected a non-empty string, got ""'),
        ({"type": "session.stop", "session": ""}, 'session.stop.session: expected a non-empty string, got ""'),
        ({"type": "session.approve", "session": "a", "request_id": "", "allow": True}, 'session.approve.request_id: expected a non-empty string, got ""'),
        ({"type": "connection.kick", "connection": -2}, "connection.kick.connection: expected a connection id (an integer ≥ 0), got -2"),
    ],
)  # fmt: skip
def test_a_wrong_field_value_is_bad_request_naming_the_field(
    frame: dict[str, Any], message: str
) -> None:
    error = reject(orjson.dumps({"id": 11, **frame}).decode())
    assert (error.code, error.request_id) == ("bad_request", 11)
    assert error.message == message


@pytest.mark.parametrize(
    ("value", "shown"), [("true", "true"), ("1.5", "1.5"), ("[1]", "a list"), ("{}", "a table")]
)
def test_an_id_that_is_not_an_integer_or_string_is_bad_request_without_an_id(
    value: str, shown: str
) -> None:
    error = reject(f'{{"type": "ping", "id": {value}}}')
    assert (error.code, error.request_id) == ("bad_request", None)
    assert error.message == f"ping.id: expected an integer or a string, got {shown}"


def test_every_problem_of_a_frame_is_reported_in_one_message() -> None:
    error = reject('{"type": "session.approve", "id": 2, "session": "", "allw": true}')
    assert error.message == (
        "session.approve.allw: unknown field; known fields: type, id, session, request_id,"
        ' allow, message, always, input; session.approve.session: expected a non-empty string, got "";'
        " session.approve.request_id: required, but missing;"
        " session.approve.allow: required, but missing"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            '"args": ["ok", "a\\u0000b"]',
            'session.start.args[1]: expected a string without NUL characters, got "a\x00b"',
        ),
        (
            '"cwd": "/srv/\\u0000x"',
            'session.start.cwd: expected a non-empty path without NUL characters, got "/srv/\x00x"',
        ),
    ],
)
def test_a_nul_in_session_start_args_or_cwd_is_a_bad_request_naming_the_field(
    fields: str, message: str
) -> None:
    error = reject('{"type": "session.start", "id": 1, "agent": "x", ' + fields + "}")
    assert (error.code, error.message) == ("bad_request", message)


HUGE_ARGS = (
    '{"type": "session.start", "id": 4, "agent": "x", "args": [' + ",".join(["0"] * 500_000) + "]}"
)
"""About 1 MB: the frame of issue #19 that built millions of objects and a 27 MB reply."""


def test_a_list_of_bad_items_is_reported_by_its_first_few_only() -> None:
    error = reject(HUGE_ARGS)
    assert (error.code, error.request_id) == ("bad_request", 4)
    assert error.message.startswith(
        "session.start.args[0]: expected a string without NUL characters, got 0;"
    )
    assert error.message.count("expected a string") == MAX_PROBLEMS
    assert "args[5]" not in error.message
    assert len(error.message) < 400


def test_the_validation_of_a_list_stops_at_its_first_bad_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []
    structure_str = convert._strict_str

    def counting(value: object, type_: type) -> str:
        seen.append(value)
        return structure_str(value, type_)

    monkeypatch.setattr(convert, "_strict_str", counting)
    conv = convert.make_converter()
    with pytest.raises(IterableValidationError) as excinfo:
        conv.structure([1] * 100_000, tuple[str, ...])
    assert len(seen) == convert.MAX_ITEM_PROBLEMS
    paths = [path for path, _ in convert.flatten_errors(excinfo.value)]
    assert paths == [f"[{i}]" for i in range(convert.MAX_ITEM_PROBLEMS)]


def test_many_unknown_fields_are_reported_by_the_first_few_and_names_are_cut() -> None:
    fields = ", ".join(f'"{"k" * 100}{i}": 0' for i in range(10_000))
    error = reject('{"type": "ping", ' + fields + "}")
    assert error.message.count("unknown field") == MAX_PROBLEMS
    assert "k" * 61 not in error.message
    assert error.message.endswith("; and more (only the first problems are listed)")
    assert len(error.message) < 800


def test_an_error_frame_cuts_a_long_message() -> None:
    frame = orjson.loads(error_frame(1, "not_found", "x" * 100_000))
    assert len(frame["message"]) == MAX_ERROR_MESSAGE_CHARS
    assert frame["message"].endswith("...")


def test_the_id_is_returned_even_for_an_unknown_type_with_bad_fields() -> None:
    assert reject('{"type": "nope", "id": "r-1", "x": []}').request_id == "r-1"


def test_protocol_error_is_a_value_error() -> None:
    assert isinstance(reject("[]"), ValueError)


# -- server frames ---------------------------------------------------------------------------


def test_welcome_frame_is_the_documented_json() -> None:
    frame = welcome_frame("operator", "alice", 20.0, "0.1.0", 17)
    assert frame == (
        '{"type":"welcome","server":"hived","version":"0.1.0","role":"operator",'
        '"token_name":"alice","heartbeat_interval_s":20.0,"connection":17}'
    )
    in_a_cluster = orjson.loads(welcome_frame("operator", "alice", 20.0, "0.1.0", 17, "build-1"))
    assert in_a_cluster["node"] == "build-1"


def test_result_frame_echoes_the_id_and_encodes_attrs_values() -> None:
    assert orjson.loads(
        result_frame(7, {"topic": "sessions", "recovered": True, "last_seq": 57})
    ) == {
        "type": "result",
        "id": 7,
        "result": {"topic": "sessions", "recovered": True, "last_seq": 57},
    }
    assert orjson.loads(result_frame("a", [Caller(3, "alice", "admin")])) == {
        "type": "result",
        "id": "a",
        "result": [{"connection": 3, "token_name": "alice", "role": "admin"}],
    }


def test_error_frame_has_id_code_and_message() -> None:
    assert orjson.loads(error_frame(None, "bad_json", "not valid JSON")) == {
        "type": "error",
        "id": None,
        "code": "bad_json",
        "message": "not valid JSON",
    }


def test_error_frame_refuses_a_code_outside_the_contract() -> None:
    with pytest.raises(ValueError, match="unknown error code 'oops'"):
        error_frame(1, "oops", "x")


def test_error_codes_are_those_of_the_contract() -> None:
    assert sorted(ERROR_CODES) == [
        "bad_json", "bad_request", "conflict", "forbidden", "internal", "not_found", "unknown_type"
    ]  # fmt: skip


def test_close_codes_are_those_of_the_contract() -> None:
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "TOO_BIG": 1009,
        "INTERNAL": 1011,
        "NOT_AUTHENTICATED": 4001,
        "ROLE_TOO_LOW": 4003,
        "TOO_SLOW": 4008,
        "RATE_LIMITED": 4029,
    }


def test_parse_server_frame_accepts_one_object_or_an_array() -> None:
    event = '{"type":"event","topic":"sessions","seq":1}'
    assert parse_server_frame(event) == [orjson.loads(event)]
    assert parse_server_frame(f"[{event},{event}]") == [orjson.loads(event)] * 2


@pytest.mark.parametrize("text", ["[1]", '{"seq": 1}', "nope"])
def test_parse_server_frame_rejects_what_is_not_messages(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_server_frame(text)


def test_close_reason_fits_a_close_frame_without_splitting_a_character() -> None:
    assert close_reason("kicked") == "kicked"
    cut = close_reason("é" * 100)
    assert len(cut.encode()) <= 123
    assert cut.endswith("...")
    assert cut.startswith("é" * 60)


# -- roles -----------------------------------------------------------------------------------


def test_every_request_type_has_a_required_role() -> None:
    assert set(ROLE_REQUIRED) == set(REQUEST_TYPES)


def test_roles_per_request_are_those_of_the_contract() -> None:
    by_role = {
        role: {t for t, required in ROLE_REQUIRED.items() if required == role}
        for role in ("viewer", "operator", "admin")
    }
    assert by_role == {
        "viewer": {
            "hello", "ping", "subscribe", "unsubscribe", "sessions", "session.events", "agents",
            "search", "usage", "session.export",
            "notifications", "watch", "push.key", "push.subscribe", "push.unsubscribe",
        },
        "operator": {
            "session.start", "session.input", "session.approve", "session.answer",
            "session.interrupt", "session.stop", "session.restart", "session.resume",
        },
        "admin": {
            "status", "connections", "connection.kick", "config.reload", "daemon.stop",
            "daemon.restart", "session.forget", "notify.test",
        },
    }  # fmt: skip
    assert by_role["admin"] == ADMIN_ONLY


def test_admin_requests_on_the_client_channel_are_forbidden_naming_the_admin_channel() -> None:
    reason = forbidden_reason("status", "admin", "/v1/ws")
    assert reason == "status is answered only on the admin channel /v1/admin"
    assert forbidden_reason("status", "admin", "/v1/admin") is None


def test_a_request_above_the_connection_role_is_forbidden() -> None:
    assert forbidden_reason("session.start", "viewer", "/v1/ws") == (
        "session.start needs the operator role; this connection's token is viewer"
    )
    assert forbidden_reason("session.start", "operator", "/v1/ws") is None
    assert forbidden_reason("session.start", "admin", "/v1/admin") is None
    assert forbidden_reason("subscribe", "viewer", "/v1/ws") is None


# -- the reference stays complete --------------------------------------------------------------


def test_protocol_md_documents_every_request_error_code_close_code_and_event_kind() -> None:
    text = PROTOCOL_MD.read_text()
    missing = [f"`{t}`" for t in REQUEST_TYPES if f"`{t}`" not in text]
    missing += [f"`{c}`" for c in ERROR_CODES if f"`{c}`" not in text]
    missing += [str(int(c)) for c in CloseCode if f"`{int(c)}`" not in text]
    missing += [f"`{k}`" for k in KINDS if f"`{k}`" not in text]
    assert missing == []


# -- the first message of a connection without a token: hello --------------------------------

AUTHENTICATE_FIRST = 'authenticate first: send {"type": "hello", "token": "..."}'
OPERATOR_SECRET = "op-secret-0123456789abcdef0123456789abcdef"
HELLO_TABLE = TokenTable(
    [
        token("alice", "admin", ALICE_SECRET),
        token("ops", "operator", OPERATOR_SECRET),
        token("bot", "agent", BOT_SECRET),
    ]
)


def hello(secret: str) -> str:
    return f'{{"type": "hello", "id": 1, "token": "{secret}"}}'


@pytest.mark.parametrize(
    "text",
    [
        None,  # a binary message
        "not json",
        "[]",
        '{"type": "hello"}',  # no token
        '{"type": "hello", "token": ""}',
        '{"type": "subscribe", "id": 1, "topic": "sessions"}',
        '{"type": "ping"}',
    ],
    ids=["binary", "not-json", "not-an-object", "no-token", "empty-token", "subscribe", "ping"],
)
def test_anything_but_a_hello_first_closes_with_4001_saying_how_to_authenticate(
    text: str | None,
) -> None:
    outcome = check_hello(text, HELLO_TABLE.lookup, "/v1/ws")
    assert outcome == HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, AUTHENTICATE_FIRST)


def test_a_hello_with_an_unknown_token_closes_with_4001_without_echoing_it() -> None:
    outcome = check_hello(hello("guess"), HELLO_TABLE.lookup, "/v1/ws")
    assert outcome == HelloOutcome(
        None, CloseCode.NOT_AUTHENTICATED, "not authenticated: unknown token"
    )
    assert "guess" not in repr(outcome)


@pytest.mark.parametrize(
    ("secret", "channel", "reason"),
    [
        (BOT_SECRET, "/v1/ws", "role agent may not open /v1/ws"),
        (OPERATOR_SECRET, "/v1/admin", "role operator may not open /v1/admin"),
    ],
)
def test_a_hello_whose_role_is_too_low_for_the_channel_closes_with_4003(
    secret: str, channel: str, reason: str
) -> None:
    outcome = check_hello(hello(secret), HELLO_TABLE.lookup, channel)
    assert outcome == HelloOutcome(None, CloseCode.ROLE_TOO_LOW, reason)


@pytest.mark.parametrize(
    ("secret", "channel", "name"),
    [
        (OPERATOR_SECRET, "/v1/ws", "ops"),
        (ALICE_SECRET, "/v1/ws", "alice"),
        (ALICE_SECRET, "/v1/admin", "alice"),
    ],
)
def test_a_hello_with_a_known_token_allowed_on_the_channel_authenticates(
    secret: str, channel: str, name: str
) -> None:
    outcome = check_hello(hello(secret), HELLO_TABLE.lookup, channel)
    assert outcome.token is not None
    assert outcome.token.name == name
    assert (outcome.code, outcome.reason) == (CloseCode.NORMAL, "")


def test_a_huge_first_message_closes_4001_without_being_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: object) -> object:
        raise AssertionError("a first message was validated as a request")

    monkeypatch.setattr(protocol, "_structure", never)
    monkeypatch.setattr(protocol, "parse_frame", never)
    outcome = check_hello(HUGE_ARGS, HELLO_TABLE.lookup, "/v1/ws")
    assert outcome == HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, AUTHENTICATE_FIRST)


def test_a_first_message_longer_than_any_hello_is_refused_unread() -> None:
    padded = '{"type": "hello", "token": "' + OPERATOR_SECRET + '"' + " " * MAX_HELLO_CHARS + "}"
    assert check_hello(padded, HELLO_TABLE.lookup, "/v1/ws").token is None
    assert check_hello(hello(OPERATOR_SECRET), HELLO_TABLE.lookup, "/v1/ws").token is not None


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "hello", "token": "x", "extra": 1}',
        '{"type": "hello", "token": 5}',
        '{"type": "hello", "token": "x", "id": true}',
        '{"type": "hello", "token": "x", "id": [1]}',
    ],
)
def test_a_hello_with_anything_but_token_and_id_closes_4001(text: str) -> None:
    outcome = check_hello(text, HELLO_TABLE.lookup, "/v1/ws")
    assert outcome == HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, AUTHENTICATE_FIRST)


def test_check_hello_looks_up_the_secret_sent() -> None:
    asked: list[str] = []

    def lookup(secret: str) -> TokenConfig | None:
        asked.append(secret)
        return None

    check_hello(hello("s3cret"), lookup, "/v1/ws")
    assert asked == ["s3cret"]
