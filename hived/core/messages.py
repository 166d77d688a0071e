"""The client requests of the wire protocol, as typed values.

How it works: each request ``type`` on the wire is one frozen attrs class whose field names are
the wire's field names; ``id`` (the request id echoed in the reply) is on every one of them.
List requests share their ``limit`` and ``cursor`` through :class:`PagedRequest`.
Value rules (a topic's shape, ``since`` ≥ 0, ``limit`` in 1..10000, a known session state,
non-empty names) are
attached to field types with ``Annotated[base, Rule(...)]``: for mypy and for the code building
requests the field is a plain ``int`` or ``str``, while the strict converter (:data:`CONVERTER`)
checks the rule while it structures, so a bad value is reported with its field path like a bad
type is (``subscribe.since: expected an integer ≥ 0, got "five"``). Turning frame text into these
classes, and the rest of the protocol, is in :mod:`hived.core.protocol`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal, get_args, get_origin

import attrs
import cattrs

from hived.core.convert import expected, make_converter
from hived.core.events import KINDS
from hived.core.sessions import UNREACHABLE, State

TOPIC_RE: Final = re.compile(r"sessions|session/[0-9A-Za-z_-]{1,64}")
"""Topics a client may subscribe to: ``sessions``, or ``session/<id>``."""

MAX_LIMIT: Final = 10_000
"""The largest page a ``limit`` may ask for."""


@attrs.frozen
class Rule:
    """A value rule for a field, attached with ``Annotated``; ``what`` is said when it fails."""

    what: str
    """What a valid value is, for ``expected WHAT, got VALUE``."""
    test: Callable[[Any], bool]
    """True for a valid value (already of the base type, and normalized)."""
    normalize: Callable[[Any], Any] | None = None
    """Applied to the value before the test, and kept: ``str.upper`` for session states."""


def _is_iso_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


Seq = Annotated[int, Rule("an integer ≥ 0", lambda v: v >= 0)]
"""A position in a topic: events with a larger ``seq`` are wanted."""
Limit = Annotated[int, Rule(f"an integer from 1 to {MAX_LIMIT}", lambda v: 1 <= v <= MAX_LIMIT)]
"""How many items a page may hold."""
ConnectionId = Annotated[int, Rule("a connection id (an integer ≥ 0)", lambda v: v >= 0)]
Topic = Annotated[
    str, Rule('"sessions" or "session/<id>"', lambda v: TOPIC_RE.fullmatch(v) is not None)
]
NonEmpty = Annotated[str, Rule("a non-empty string", lambda v: v != "")]
Amount = Annotated[float, Rule("a number greater than 0", lambda v: 0 < v < float("inf"))]
PositiveCount = Annotated[int, Rule("an integer ≥ 1", lambda v: v >= 1)]
Argument = Annotated[str, Rule("a string without NUL characters", lambda v: "\x00" not in v)]
"""A command-line argument: the OS cannot pass a NUL."""
Path = Annotated[
    str, Rule("a non-empty path without NUL characters", lambda v: v != "" and "\x00" not in v)
]
SessionState = Annotated[
    str,
    Rule(
        "a session state (" + ", ".join([*State, UNREACHABLE]) + ")",
        lambda v: v in State.__members__ or v == UNREACHABLE,
        normalize=str.upper,
    ),
]
"""A state name in any case, kept upper-case (``waiting`` is ``WAITING``); ``UNREACHABLE``
finds another cluster node's sessions shown so."""
Timestamp = Annotated[str, Rule('an ISO 8601 time such as "2026-11-26T08:00:00Z"', _is_iso_time)]
SEARCH_MAX_QUERY: Final = 1000
"""The longest search query, in characters: a query costs by its terms."""
SearchQuery = Annotated[
    str,
    Rule(
        f"a non-empty query of at most {SEARCH_MAX_QUERY} characters",
        lambda v: len(v.strip()) > 0 and len(v) <= SEARCH_MAX_QUERY,
    ),
]
SEARCH_MAX_LIMIT: Final = 500
"""The largest page of search hits."""
SearchLimit = Annotated[
    int, Rule(f"an integer from 1 to {SEARCH_MAX_LIMIT}", lambda v: 1 <= v <= SEARCH_MAX_LIMIT)
]
USAGE_GROUPS: Final = ("day", "template", "session", "cwd")
UsageGroup = Annotated[
    str, Rule("one of " + ", ".join(f'"{g}"' for g in USAGE_GROUPS), lambda v: v in USAGE_GROUPS)
]
EXPORT_FORMATS: Final = ("jsonl", "md")
ExportFormat = Annotated[str, Rule('"jsonl" or "md"', lambda v: v in EXPORT_FORMATS)]
EventKind = Annotated[
    str, Rule("an event kind (" + ", ".join(sorted(KINDS)) + ")", lambda v: v in KINDS)
]


@attrs.frozen
class BaseRequest:
    """What every request has: its wire ``type`` (a class constant) and an optional ``id``."""

    type: ClassVar[str]
    """The wire ``type`` of this request class."""
    id: int | str | None = attrs.field(default=None, kw_only=True)
    """Chosen by the client; echoed in the ``result`` or ``error`` that answers this request."""


@attrs.frozen
class PagedRequest(BaseRequest):
    """A list request answered a page at a time (:mod:`hived.core.pages`): at most ``limit``
    items and 256 KiB of them; the reply's ``next`` asks for the page after it."""

    limit: Limit | None = attrs.field(default=None, kw_only=True)
    """At most this many items in the page."""


@attrs.frozen
class CursorPagedRequest(PagedRequest):
    """A paged list request whose next page is asked for by giving the reply's ``next`` back
    as ``cursor`` (``sessions`` predates it: its cursor is ``before``)."""

    cursor: NonEmpty | None = attrs.field(default=None, kw_only=True)
    """The ``next`` of the previous page; absent: the first page."""


@attrs.frozen
class Hello(BaseRequest):
    """Authenticate a connection opened without an ``Authorization`` header."""

    type: ClassVar[str] = "hello"
    token: NonEmpty = attrs.field(repr=False)
    """The secret of a configured token; left out of ``repr`` so that it never reaches a log."""


@attrs.frozen
class Subscribe(BaseRequest):
    """Receive the events of a topic, optionally replaying those after ``since`` first."""

    type: ClassVar[str] = "subscribe"
    topic: Topic
    since: Seq | None = None
    """Replay every kept event with ``seq`` > since, then go live; absent: live only."""
    epoch: Seq | None = None
    """With ``since``: the ``epoch`` of the subscribe result ``since`` came from. On another
    node's session (a cluster), another one than the engine's means the engine made its copy
    again, and the replay starts over."""


@attrs.frozen
class Unsubscribe(BaseRequest):
    """Stop receiving a topic."""

    type: ClassVar[str] = "unsubscribe"
    topic: Topic


@attrs.frozen
class Sessions(PagedRequest):
    """List session summaries (running ones; ended ones too with ``all`` or ``since``)."""

    type: ClassVar[str] = "sessions"
    state: SessionState | None = None
    """Only sessions in this state (``RUNNING``, ``WAITING``…)."""
    agent: NonEmpty | None = None
    """Only sessions of this agent template."""
    all: bool = False
    """Include ended sessions."""
    since: Timestamp | None = None
    """Only sessions started at or after this time (implies ``all``)."""
    before: NonEmpty | None = None
    """Only sessions older than this id: the ``next`` of the previous page."""


@attrs.frozen
class SessionStart(BaseRequest):
    """Start a session from an agent template."""

    type: ClassVar[str] = "session.start"
    agent: NonEmpty
    """The template's name (``[agents.NAME]``)."""
    prompt: str | None = None
    """A first prompt, sent as the session's first input."""
    args: tuple[Argument, ...] = ()
    """Arguments appended to the template's command."""
    cwd: Path | None = None
    """Working folder, where the template allows choosing one."""
    name: NonEmpty | None = None
    """A human name for the session."""
    max_cost_usd: Amount | None = None
    """The session's budget in USD, at most the template's ``max_cost_usd``."""
    max_tokens: PositiveCount | None = None
    """The session's budget in tokens, at most the template's ``max_tokens``."""
    node: NonEmpty | None = None
    """The cluster node to run it on (``[cluster] node``); default: the one asked."""


@attrs.frozen
class SessionInput(BaseRequest):
    """Send text to a session's agent (a prompt, or a line of input)."""

    type: ClassVar[str] = "session.input"
    session: NonEmpty
    text: str


@attrs.frozen
class SessionApprove(BaseRequest):
    """Answer an agent's permission request."""

    type: ClassVar[str] = "session.approve"
    session: NonEmpty
    request_id: NonEmpty
    """The ``request_id`` of the ``permission_request`` event being answered."""
    allow: bool
    message: str | None = None
    """Why, told to the agent (mostly useful with ``allow: false``)."""
    always: bool = False
    """Allow this kind of call from now on, where the request offers it (``permission_suggestions``
    of a Claude request, ``acceptForSession`` of a Codex one)."""
    input: dict[str, Any] | None = None
    """The tool input to run instead of the one the agent asked for (allow only)."""


@attrs.frozen
class SessionAnswer(BaseRequest):
    """Answer an agent's question (``request_kind: question``) or elicitation."""

    type: ClassVar[str] = "session.answer"
    session: NonEmpty
    request_id: NonEmpty
    answers: dict[str, str] | None = None
    """A question's answers: each question's text → the chosen option's label (several labels
    joined with ", " where the question allows several) or free text."""
    action: Literal["accept", "decline", "cancel"] | None = None
    """An elicitation's outcome."""
    content: dict[str, Any] | None = None
    """An accepted elicitation's form fields."""


@attrs.frozen
class SessionInterrupt(BaseRequest):
    """Interrupt the agent's current turn; the session stays."""

    type: ClassVar[str] = "session.interrupt"
    session: NonEmpty


@attrs.frozen
class SessionStop(BaseRequest):
    """Stop a session (SIGTERM, grace, SIGKILL); it is not restarted."""

    type: ClassVar[str] = "session.stop"
    session: NonEmpty


@attrs.frozen
class SessionRestart(BaseRequest):
    """Stop a session if it runs, then start it again with the same template and arguments."""

    type: ClassVar[str] = "session.restart"
    session: NonEmpty


@attrs.frozen
class SessionResume(BaseRequest):
    """Go on with an ended session (of this daemon run or an earlier one): the same session id,
    its seq continuing, the agent resuming its own conversation where its format allows."""

    type: ClassVar[str] = "session.resume"
    session: NonEmpty
    prompt: str | None = None
    """A prompt for the resumed conversation."""


@attrs.frozen
class SessionEvents(PagedRequest):
    """Read a page of one session's kept events (its cursor is ``since``: the last seq read)."""

    type: ClassVar[str] = "session.events"
    session: NonEmpty
    since: Seq | None = None
    """Events with ``seq`` greater than this (on the session's topic)."""


@attrs.frozen
class Search(CursorPagedRequest):
    """Full-text search over the kept events (FTS5 query syntax), newest first."""

    type: ClassVar[str] = "search"
    query: SearchQuery
    """Words, ``"a phrase"``, ``prefix*``, ``AND``/``OR``/``NOT``, ``NEAR(a b, 5)``."""
    session: NonEmpty | None = None
    """Only events of this session (an id, an id prefix or a name)."""
    agent: NonEmpty | None = None
    """Only events of sessions of this agent template."""
    kinds: tuple[EventKind, ...] = ()
    """Only events of these kinds."""
    since: Timestamp | None = None
    """Only events kept at or after this time."""
    until: Timestamp | None = None
    """Only events kept before this time."""
    limit: SearchLimit | None = attrs.field(default=None, kw_only=True)
    """Hits per page (default 50): fewer than other lists allow, as each costs a snippet."""


@attrs.frozen
class UsageLedger(BaseRequest):
    """Tokens by kind and cost, grouped by day, template, session or working folder."""

    type: ClassVar[str] = "usage"
    by: UsageGroup = "day"
    since: Timestamp | None = None
    """From this time (inclusive); absent: from the first kept turn."""
    until: Timestamp | None = None
    """To this time (exclusive); absent: until now."""


@attrs.frozen
class SessionExport(BaseRequest):
    """A page of a session's transcript: JSONL (every event, lossless) or Markdown."""

    type: ClassVar[str] = "session.export"
    session: NonEmpty
    format: ExportFormat = "jsonl"
    cursor: Seq | None = None
    """The ``next`` of the previous page (a seq); absent: from the start."""


@attrs.frozen
class SessionForget(BaseRequest):
    """Delete ended sessions and everything kept of them: one, or every one ended before a
    time (exactly one of ``session`` and ``ended_before``)."""

    type: ClassVar[str] = "session.forget"
    session: NonEmpty | None = None
    ended_before: Timestamp | None = None


@attrs.frozen
class Status(BaseRequest):
    """The daemon's state: version, uptime, connections, sessions, hub and store figures."""

    type: ClassVar[str] = "status"


@attrs.frozen
class Connections(CursorPagedRequest):
    """List open connections with their statistics, by id."""

    type: ClassVar[str] = "connections"


@attrs.frozen
class ConnectionKick(BaseRequest):
    """Close another connection."""

    type: ClassVar[str] = "connection.kick"
    connection: ConnectionId
    """The target's connection id (``id`` is taken by the request id)."""
    reason: str | None = None
    """Sent as the close reason."""


@attrs.frozen
class ConfigReload(BaseRequest):
    """Re-read the config file, as SIGHUP does."""

    type: ClassVar[str] = "config.reload"


@attrs.frozen
class DaemonStop(BaseRequest):
    """Stop the daemon gracefully, after replying."""

    type: ClassVar[str] = "daemon.stop"


@attrs.frozen
class DaemonRestart(BaseRequest):
    """Restart the daemon, after replying, leaving every agent running (an upgrade)."""

    type: ClassVar[str] = "daemon.restart"


@attrs.frozen
class Agents(BaseRequest):
    """List the agent templates sessions can be started from."""

    type: ClassVar[str] = "agents"


@attrs.frozen
class Watch(BaseRequest):
    """Say which session this connection's person is looking at (DESIGN §12: attention)."""

    type: ClassVar[str] = "watch"
    session: NonEmpty | None = None
    """The session open in front of them; null: none."""
    focused: bool = True
    """Whether the window showing it has the focus."""


@attrs.frozen
class PushKeys:
    """A browser's keys for Web Push, as ``PushSubscription.toJSON()`` gives them."""

    p256dh: NonEmpty
    auth: NonEmpty


@attrs.frozen
class PushSubscription:
    """``PushSubscription.toJSON()`` of a browser."""

    endpoint: NonEmpty
    keys: PushKeys
    expirationTime: float | None = None


@attrs.frozen
class PushKey(BaseRequest):
    """The daemon's VAPID public key, for ``pushManager.subscribe``."""

    type: ClassVar[str] = "push.key"


@attrs.frozen
class PushSubscribe(BaseRequest):
    """Keep a browser's push subscription: Web Push notifications go to it."""

    type: ClassVar[str] = "push.subscribe"
    subscription: PushSubscription


@attrs.frozen
class PushUnsubscribe(BaseRequest):
    """Forget a push subscription."""

    type: ClassVar[str] = "push.unsubscribe"
    endpoint: NonEmpty


@attrs.frozen
class Notifications(CursorPagedRequest):
    """The last notifications born, newest first, with their outcome (DESIGN §12)."""

    type: ClassVar[str] = "notifications"


@attrs.frozen
class NotifyTest(BaseRequest):
    """Send a test message through one ``[[notify]]`` rule now."""

    type: ClassVar[str] = "notify.test"
    rule: NonEmpty


@attrs.frozen
class Ping(BaseRequest):
    """An application-level ping, for clients (browsers) that cannot see WebSocket pings."""

    type: ClassVar[str] = "ping"


Request = (
    Hello
    | Subscribe
    | Unsubscribe
    | Sessions
    | SessionStart
    | SessionInput
    | SessionApprove
    | SessionAnswer
    | SessionInterrupt
    | SessionStop
    | SessionRestart
    | SessionResume
    | SessionEvents
    | Search
    | UsageLedger
    | SessionExport
    | SessionForget
    | Status
    | Connections
    | ConnectionKick
    | ConfigReload
    | DaemonStop
    | DaemonRestart
    | Ping
    | Agents
    | Notifications
    | NotifyTest
    | Watch
    | PushKey
    | PushSubscribe
    | PushUnsubscribe
)
"""Any client request."""

REQUEST_TYPES: Final[dict[str, type[BaseRequest]]] = {cls.type: cls for cls in get_args(Request)}
"""Wire ``type`` → request class, in the order the protocol documents them."""


def _request_id(value: object, _: object) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(expected("an integer or a string", value))


def _has_rule(type_: Any) -> bool:
    return get_origin(type_) is Annotated and any(isinstance(m, Rule) for m in type_.__metadata__)


def _ruled(type_: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    base = type_.__origin__
    rule = next(m for m in type_.__metadata__ if isinstance(m, Rule))
    structure_base = conv.get_structure_hook(base)

    def structure(value: object, _: object) -> Any:
        try:
            result = structure_base(value, base)
        except TypeError:
            raise TypeError(expected(rule.what, value)) from None
        if rule.normalize is not None:
            result = rule.normalize(result)
        if not rule.test(result):
            raise ValueError(expected(rule.what, value))
        return result

    return structure


def _make_request_converter() -> cattrs.Converter:
    conv = make_converter()
    conv.register_structure_hook(int | str | None, _request_id)
    conv.register_structure_hook_factory(_has_rule, _ruled)
    return conv


CONVERTER: Final = _make_request_converter()
"""The strict converter for request objects (without their ``type`` key)."""


def field_names(cls: type[BaseRequest]) -> list[str]:
    """The fields a request of this class may carry on the wire, ``type`` first."""
    return ["type", *(field.name for field in attrs.fields(cls))]
