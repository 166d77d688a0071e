"""The config model and its strict loader from TOML text.

How it works: ``tomllib`` parses the text into plain dicts; hived's strict converter
(:mod:`hived.core.convert`) structures them into the frozen classes below, collecting every
problem instead of stopping at the first. Value rules live in the structure hooks of small
``NewType`` s (``Listen``, ``Seconds``, ``Sha256``…), so a bad value is reported with its key path
like a bad type is. Rules that span keys (duplicate token names or secrets, a TLS key without a
certificate) run after structuring. Relative paths are taken relative to the config file's
folder. Reading the file is the caller's business: this module never touches the disk.
"""

from __future__ import annotations

import ipaddress
import math
import os.path
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Any, Final, Literal, NewType, get_args

import attrs
import cattrs

from hived.core.convert import expected, flatten_errors, make_converter
from hived.core.defaults import DEFAULT_LISTEN
from hived.core.errors import ConfigError
from hived.core.notifyconfig import (
    Delay,
    HttpUrl,
    Mailbox,
    NotifyRule,
    Priority,
    delay,
    http_url,
    mailbox,
    notify_checks,
    priority,
)

Role = Literal["viewer", "operator", "admin", "agent"]
AgentFormat = Literal["text", "jsonl", "claude", "codex", "codex-app", "acp"]
RestartPolicy = Literal["no", "on-failure", "always"]
BudgetAction = Literal["interrupt", "stop"]
Compression = Literal["deflate", "off"]

ROLES: Final[tuple[str, ...]] = get_args(Role)
FORMATS: Final[tuple[str, ...]] = get_args(AgentFormat)
RESTART_POLICIES: Final[tuple[str, ...]] = get_args(RestartPolicy)

Listen = NewType("Listen", str)
"""``host:port``; an IPv6 host in brackets (``[::1]:7420``)."""
Seconds = NewType("Seconds", float)
"""A duration in seconds, greater than 0."""
PerSecond = NewType("PerSecond", float)
"""A rate, in anything per second: a finite number greater than 0."""
PositiveInt = NewType("PositiveInt", int)
Count = NewType("Count", int)
"""An integer ≥ 0."""
Usd = NewType("Usd", float)
"""An amount in US dollars: a finite number greater than 0."""
Sha256 = NewType("Sha256", str)
"""64 hexadecimal digits (stored lower-case)."""
Origin = NewType("Origin", str)
"""``scheme://host[:port]``, as browsers send in the ``Origin`` header."""
Command = NewType("Command", tuple[str, ...])
"""A non-empty argv list of strings."""
Name = NewType("Name", str)
"""A short name: letters, digits, ``_ . -``, starting with a letter or digit."""
EngineUrl = NewType("EngineUrl", str)
"""``redis://host:port[/db]`` or ``rediss://…`` (TLS), with no password in it."""
KeyPrefix = NewType("KeyPrefix", str)
"""The start of every key hived writes in the engine: letters, digits, ``_ . : -``."""

ArgsAllowed = str | tuple[str, ...]
"""The extra arguments a template takes: a list of exact arguments, or a regular expression
that each argument must match whole."""

WORK_DIR: Final = "work"
"""The folder under ``state.dir`` that holds the default working folder of each template."""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE: Final = "letters, digits, _ . - (≤ 64)"
_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_KEY_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_ORIGIN_RE: Final = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+")


@attrs.frozen
class ServerConfig:
    """``[server]``: the one TCP listener for HTTP and WebSocket."""

    listen: Listen = Listen(DEFAULT_LISTEN)
    """Where to listen, ``host:port``."""
    allowed_origins: tuple[Origin, ...] = ()
    """Browser Origins allowed to connect besides the daemon's own (same-origin)."""
    max_message_bytes: PositiveInt = PositiveInt(1_048_576)
    """Largest frame or hook body accepted; a larger WebSocket frame closes with 1009."""
    heartbeat_interval_s: Seconds = Seconds(20.0)
    """Time between pings to each WebSocket client."""
    heartbeat_timeout_s: Seconds = Seconds(10.0)
    """How long a pong may take before the connection is dropped."""
    auth_timeout_s: Seconds = Seconds(5.0)
    """How long a client without a header token has to send ``hello``."""
    subscriber_queue: PositiveInt = PositiveInt(4096)
    """Events queued per subscriber before it is closed with 4008."""
    subscriber_queue_bytes: PositiveInt = PositiveInt(16 << 20)
    """Bytes of events queued per subscriber before it is closed with 4008 (a lone event
    larger than this is still queued when nothing else is)."""
    max_frame_bytes: PositiveInt = PositiveInt(262_144)
    """Largest frame hived makes by batching events or replies (a single larger message still
    goes alone). Well under the 1 MiB that client libraries accept by default."""
    rate_limit_per_s: PerSecond = PerSecond(50.0)
    """Messages a second a WebSocket client may send for as long as it likes; a client that
    sends more, once its ``rate_limit_burst`` is spent, is closed with 4029."""
    rate_limit_burst: PositiveInt = PositiveInt(200)
    """Messages a WebSocket client may send at once; after them it may go on at
    ``rate_limit_per_s``."""
    tls_cert: str | None = None
    """PEM certificate chain; TLS is on when this and ``tls_key`` are set."""
    tls_key: str | None = None
    """PEM private key for ``tls_cert``."""
    metrics_open_on_loopback: bool = False
    """``GET /metrics`` without a token for clients on the loopback (a local Prometheus)."""
    compression: Compression = "deflate"
    """``deflate``: permessage-deflate with clients that offer it (no context takeover: no
    compressor kept per connection); ``off``: never."""
    compression_min_bytes: PositiveInt = PositiveInt(256)
    """With compression agreed, messages shorter than this still go uncompressed."""


@attrs.frozen
class StateConfig:
    """``[state]``: where and how long events are kept."""

    dir: str = "/var/lib/hived"
    """Folder of the SQLite store."""
    retention_days: PositiveInt = PositiveInt(30)
    """Events older than this are pruned."""
    max_bytes: PositiveInt = PositiveInt(1 << 30)
    """Past this store size the oldest events are pruned."""
    sync_interval_ms: PositiveInt = PositiveInt(200)
    """An event is on disk at most this long after it is published."""
    max_pending_bytes: PositiveInt = PositiveInt(64 << 20)
    """Bytes of events waiting to be written past which agents' output waits and hooks are
    refused with 503 (a slow or failing disk), until half of it is written."""


@attrs.frozen
class DaemonConfig:
    """``[daemon]``: the process as a whole."""

    shutdown_timeout_s: Seconds = Seconds(20.0)
    """Graceful stop budget: connections closed, sessions stopped, store flushed."""


@attrs.frozen
class HooksConfig:
    """``[hooks]``: sessions hived did not start, seen through Claude Code hooks."""

    observed_idle_s: Seconds = Seconds(1800.0)
    """An observed session silent this long is marked LOST."""
    max_live_per_token: PositiveInt = PositiveInt(200)
    """Observed sessions the hooks of one token may keep live; a hook that would make one more
    is answered 429."""
    rate_limit_per_s: PerSecond = PerSecond(100.0)
    """Hooks a second one token may post for as long as it likes; past its
    ``rate_limit_burst`` a hook is answered 429."""
    rate_limit_burst: PositiveInt = PositiveInt(1000)
    """Hooks one token may post at once."""


@attrs.frozen
class TokenConfig:
    """One ``[[tokens]]`` entry: a secret's SHA-256 and the role it grants."""

    name: Name
    """Who holds it; shown in logs and ``connections`` (never the secret)."""
    role: Role
    """``viewer`` < ``operator`` < ``admin``; ``agent`` may only post hook events."""
    sha256: Sha256
    """SHA-256 of the secret, hex; ``hived token new`` prints it."""


@attrs.frozen
class AgentConfig:
    """One ``[agents.NAME]`` template; sessions are started from it."""

    command: Command
    """argv of the agent, never run through a shell."""
    description: str | None = None
    """What the template is for, in a sentence, for people choosing one."""
    format: AgentFormat = "text"
    """How its stdout is parsed and its stdin written: ``text``, ``jsonl``, ``claude``, ``codex``,
    ``codex-app`` or ``acp`` (docs/drivers.md)."""
    cwd: str | None = None
    """Working folder of its sessions (default: ``<state.dir>/work/<name>``, made 0700)."""
    cwd_roots: tuple[str, ...] = ()
    """Folders under which ``session.start`` may pick another ``cwd``; empty: no override."""
    args_allowed: ArgsAllowed = ()
    """The arguments ``session.start`` may append to ``command``: a list of exact arguments,
    or a regular expression each must match whole; by default none."""
    env: dict[str, str] = attrs.field(factory=dict)
    """Variables added to the daemon's environment for the agent."""
    restart: RestartPolicy = "on-failure"
    """When an exited session is started again."""
    max_restarts: Count = Count(5)
    """Restarts allowed within ``restart_window_s`` before the session is FATAL."""
    restart_window_s: Seconds = Seconds(300.0)
    """The window in which restarts are counted."""
    stop_timeout_s: Seconds = Seconds(10.0)
    """Grace between SIGTERM and SIGKILL to the process group."""
    idle_s: Seconds = Seconds(600.0)
    """No output for this long: the session is STALLED."""
    autostart: Count = Count(0)
    """Sessions of this template started with the daemon."""
    max_cost_usd: Usd | None = None
    """A session that has cost this much has reached its budget (``session.start`` may ask
    for less, not more)."""
    max_tokens: PositiveInt | None = None
    """A session that has used this many tokens (input, cached and output together) has
    reached its budget."""
    budget_action: BudgetAction = "interrupt"
    """What reaching a budget does: ``interrupt`` the turn (and take no new prompt), or
    ``stop`` the session."""


@attrs.frozen
class ClusterConfig:
    """``[cluster]``: this node's place among hived nodes sharing one Redis Streams engine.

    Absent: nothing of the cluster runs (docs/cluster.md)."""

    node: Name
    """This node's name, unique among the nodes sharing the engine."""
    url: EngineUrl
    """The engine: ``redis://host:port[/db]``, or ``rediss://`` for TLS; a user name may be in
    it, never a password (``password_file``)."""
    password_file: str | None = None
    """A file whose first line is the engine's password (``AUTH``)."""
    tls_ca: str | None = None
    """PEM file of the CAs that sign the engine's certificate (``rediss://``); default: the
    system's."""
    key_prefix: KeyPrefix = KeyPrefix("hived")
    """Every key hived writes in the engine starts with this and a colon."""
    heartbeat_interval_s: Seconds = Seconds(2.0)
    """How often this node says it is alive; silent for two of them, its sessions show
    UNREACHABLE on the other nodes."""
    request_timeout_s: Seconds = Seconds(10.0)
    """How long a request forwarded to another node waits for its answer."""


@attrs.frozen
class Config:
    """The whole config file."""

    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    daemon: DaemonConfig = DaemonConfig()
    hooks: HooksConfig = HooksConfig()
    tokens: tuple[TokenConfig, ...] = ()
    agents: dict[str, AgentConfig] = attrs.field(factory=dict)
    notify: tuple[NotifyRule, ...] = ()
    """``[[notify]]``: who is told what, when, where (:mod:`hived.core.notifyconfig`)."""
    cluster: ClusterConfig | None = None


def default_cwd(state_dir: str, agent: str) -> str:
    """The working folder of a template that sets no ``cwd``: a folder of its own under
    ``state.dir`` (never ``state.dir`` itself, where the store lives)."""
    return os.path.join(state_dir, WORK_DIR, agent)


def disallowed_arg(allowed: str | tuple[str, ...], args: tuple[str, ...]) -> str | None:
    """The first of ``args`` that ``allowed`` (an ``args_allowed``) does not allow, or None."""
    for arg in args:
        if isinstance(allowed, str):
            if re.fullmatch(allowed, arg) is None:
                return arg
        elif arg not in allowed:
            return arg
    return None


def is_name(text: str) -> bool:
    """Whether ``text`` follows :data:`NAME_RULE` (token and agent names)."""
    return _NAME_RE.fullmatch(text) is not None


def parse_listen(text: str) -> tuple[str, int]:
    """Split a valid ``host:port`` (IPv6 in brackets) into host and port."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _listen(value: object, _: object) -> Listen:
    if not isinstance(value, str):
        raise TypeError(expected('"host:port"', value))
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(expected('"host:port"', value))
    if not 1 <= int(port) <= 65535:
        raise ValueError(expected("a port from 1 to 65535", value))
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(expected('"[ipv6]:port"', value))
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(expected("an IPv6 address in brackets", value)) from None
    elif ":" in host:
        raise ValueError(expected("an IPv6 address in brackets, as [::1]:7420", value))
    return Listen(value)


def _seconds(value: object, _: object) -> Seconds:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(expected("a number of seconds", value))
    if not value > 0:
        raise ValueError(expected("a duration greater than 0", value))
    return Seconds(float(value))


def _per_second(value: object, _: object) -> PerSecond:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(expected("a number per second", value))
    if not 0 < value < math.inf:
        raise ValueError(expected("a finite number greater than 0", value))
    return PerSecond(float(value))


def _usd(value: object, _: object) -> Usd:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(expected("an amount in USD", value))
    if not 0 < value < math.inf:
        raise ValueError(expected("an amount greater than 0", value))
    return Usd(float(value))


def _integer(minimum: int) -> Callable[[object, object], int]:
    def structure(value: object, _: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(expected("an integer", value))
        if value < minimum:
            raise ValueError(expected(f"an integer ≥ {minimum}", value))
        return value

    return structure


def _matching(
    pattern: re.Pattern[str], what: str, fold: bool = False
) -> Callable[[object, object], str]:
    def structure(value: object, _: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(expected(what, value))
        return value.lower() if fold else value

    return structure


def _engine_url(value: object, _: object) -> EngineUrl:
    if not isinstance(value, str):
        raise TypeError(expected('"redis://host:port" or "rediss://host:port"', value))
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError(expected('a URL starting with "redis://" or "rediss://"', value))
    authority, _slash, db = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        raise ValueError(
            "expected no password in the URL (put it in cluster.password_file), got one"
        )
    if not hostport or "?" in value:
        raise ValueError(expected('"redis://host:port[/db]" (no query)', value))
    host, colon, port = hostport.rpartition(":")
    if colon and (not host or not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(expected("a host and a port from 1 to 65535", value))
    if db and not db.isdigit():
        raise ValueError(expected("a database number after the slash", value))
    return EngineUrl(value)


def _command(value: object, _: object) -> Command:
    if not isinstance(value, list):
        raise TypeError(expected("a non-empty list of strings", value))
    if not value:
        raise ValueError("expected a non-empty list of strings, got an empty list")
    problems = [i for i, arg in enumerate(value) if not isinstance(arg, str)]
    if problems:
        raise TypeError(expected("a list of strings", value[problems[0]]) + f" at [{problems[0]}]")
    if not value[0]:
        raise ValueError("expected a program name as the first item, got an empty string")
    return Command(tuple(value))


def _args_allowed(value: object, _: object) -> ArgsAllowed:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"expected a regular expression, got {value!r}: {exc}") from None
        return value
    if not isinstance(value, list):
        raise TypeError(expected("a list of arguments or a regular expression", value))
    problems = [i for i, arg in enumerate(value) if not isinstance(arg, str)]
    if problems:
        raise TypeError(expected("a list of strings", value[problems[0]]) + f" at [{problems[0]}]")
    return tuple(value)


def _literal(type_: Any) -> Callable[[object, object], object]:
    allowed = get_args(type_)

    def structure(value: object, _: object) -> object:
        if value not in allowed or not isinstance(value, str):
            raise ValueError(expected("one of " + ", ".join(allowed), value))
        return value

    return structure


def _make_config_converter() -> cattrs.Converter:
    conv = make_converter()
    conv.register_structure_hook(Listen, _listen)
    conv.register_structure_hook(Seconds, _seconds)
    conv.register_structure_hook(PerSecond, _per_second)
    conv.register_structure_hook(Usd, _usd)
    conv.register_structure_hook(PositiveInt, _integer(1))
    conv.register_structure_hook(Count, _integer(0))
    conv.register_structure_hook(Sha256, _matching(_SHA256_RE, "64 hex digits", fold=True))
    conv.register_structure_hook(
        Origin, _matching(_ORIGIN_RE, 'an origin such as "https://host:8443"')
    )
    conv.register_structure_hook(Name, _matching(_NAME_RE, NAME_RULE))
    conv.register_structure_hook(Command, _command)
    conv.register_structure_hook(HttpUrl, http_url)
    conv.register_structure_hook(Delay, delay)
    conv.register_structure_hook(Priority, priority)
    conv.register_structure_hook(Mailbox, mailbox)
    conv.register_structure_hook(EngineUrl, _engine_url)
    conv.register_structure_hook(
        KeyPrefix, _matching(_KEY_PREFIX_RE, "letters, digits, _ . : - (≤ 64)")
    )
    conv.register_structure_hook_func(lambda t: t == ArgsAllowed, _args_allowed)
    conv.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", None) is Literal, _literal
    )
    return conv


CONVERTER: Final = _make_config_converter()


def _cross_checks(config: Config) -> Iterator[tuple[str, str]]:
    seen: dict[str, int] = {}
    secrets: dict[str, int] = {}
    for index, token in enumerate(config.tokens):
        if token.name in seen:
            first = seen[token.name]
            yield f"tokens[{index}].name", f'"{token.name}" is already used by tokens[{first}]'
        seen.setdefault(token.name, index)
        if token.sha256 in secrets:
            first = secrets[token.sha256]
            owner = config.tokens[first].name
            yield f"tokens[{index}].sha256", f'the same secret as tokens[{first}] ("{owner}")'
        secrets.setdefault(token.sha256, index)
    server = config.server
    if (server.tls_cert is None) != (server.tls_key is None):
        yield "server", "tls_cert and tls_key go together: set both or neither"
    if server.heartbeat_timeout_s > server.heartbeat_interval_s * 10:
        yield "server.heartbeat_timeout_s", "expected at most 10 × heartbeat_interval_s"
    for name in config.agents:
        if not _NAME_RE.fullmatch(name):
            yield f"agents.{name}", f"agent names are {NAME_RULE}"
    yield from notify_checks(config.notify, list(config.agents), is_name)
    cluster = config.cluster
    if cluster is not None and cluster.tls_ca is not None and cluster.url.startswith("redis:"):
        yield "cluster.tls_ca", 'only with a "rediss://" url (TLS to the engine)'


def _resolve(config: Config, base: PurePath) -> Config:
    def path(p: str) -> str:
        return os.path.normpath(base / p)

    server = config.server
    if server.tls_cert is not None and server.tls_key is not None:
        server = attrs.evolve(server, tls_cert=path(server.tls_cert), tls_key=path(server.tls_key))
    agents = {
        name: attrs.evolve(
            agent,
            cwd=None if agent.cwd is None else path(agent.cwd),
            cwd_roots=tuple(path(root) for root in agent.cwd_roots),
        )
        for name, agent in config.agents.items()
    }
    cluster = config.cluster
    if cluster is not None:
        cluster = attrs.evolve(
            cluster,
            password_file=None if cluster.password_file is None else path(cluster.password_file),
            tls_ca=None if cluster.tls_ca is None else path(cluster.tls_ca),
        )
    return attrs.evolve(
        config,
        cluster=cluster,
        server=server,
        state=attrs.evolve(config.state, dir=path(config.state.dir)),
        agents=agents,
        notify=tuple(_resolve_rule(rule, path) for rule in config.notify),
    )


def _resolve_rule(rule: NotifyRule, path: Callable[[str], str]) -> NotifyRule:
    """The rule with the files it names taken relative to the config's folder."""

    def files(section: Any, *keys: str) -> Any:
        if section is None:
            return None
        changes = {k: path(getattr(section, k)) for k in keys if getattr(section, k) is not None}
        return attrs.evolve(section, **changes)

    return attrs.evolve(
        rule,
        webhook=files(rule.webhook, "secret_file"),
        ntfy=files(rule.ntfy, "token_file"),
        email=files(rule.email, "credentials_file", "ca_file"),
    )


_TOML_POSITION: Final = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def parse_config(text: str, source: str = "hived.toml", base_dir: PurePath | None = None) -> Config:
    """Parse and validate config text; raise :class:`ConfigError` listing every problem.

    ``source`` names the file in messages; relative paths resolve against ``base_dir``.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        if match:
            what, line, column = match.groups()
            raise ConfigError(
                [f"{source}: line {line}, column {column}: invalid TOML: {what}"]
            ) from None
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    try:
        config = CONVERTER.structure(raw, Config)
    except Exception as exc:  # cattrs raises exception groups of many kinds
        problems = [f"{source}: {path or '(top)'}: {msg}" for path, msg in flatten_errors(exc)]
        raise ConfigError(problems) from None
    problems = [f"{source}: {path}: {msg}" for path, msg in _cross_checks(config)]
    if problems:
        raise ConfigError(problems)
    return _resolve(config, base_dir) if base_dir is not None else config


def restart_needed(old: Config, new: Config) -> list[str]:
    """The keys whose change a reload cannot apply; they wait for a restart."""
    keys = []
    if old.server.listen != new.server.listen:
        keys.append("server.listen")
    if (old.server.tls_cert, old.server.tls_key) != (new.server.tls_cert, new.server.tls_key):
        keys.append("server.tls_cert/tls_key")
    if old.state != new.state:
        keys.append("state")
    if old.cluster != new.cluster:
        keys.append("cluster")
    return keys


def changed_sections(old: Config, new: Config) -> list[str]:
    """Top-level sections (and agent templates) that differ, for the reload log and reply."""
    changed = [
        field.name
        for field in attrs.fields(Config)
        if field.name != "agents" and getattr(old, field.name) != getattr(new, field.name)
    ]
    for name in sorted(old.agents.keys() | new.agents.keys()):
        if old.agents.get(name) != new.agents.get(name):
            changed.append(f"agents.{name}")
    return changed


@attrs.frozen
class ReloadOutcome:
    """What a reload did: the sections that changed, or every error of a bad file."""

    reloaded: bool
    changed: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)
