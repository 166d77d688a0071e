"""``hivectl``: hived's remote control, for people and for scripts.

argparse, not click: it is in the standard library, so hivectl adds no dependency and starts
fast (it runs as a Claude Code hook on every tool call); its parsers are also what the man-page
test introspects.

Exit status: 0 ok; 1 hived answered with an error, or closed the connection on purpose (an
admin's ``kick``); 2 usage; 3 cannot connect, or the connection was lost; 4 the token or its
role was refused; 130 interrupted (Ctrl-C).

Text output shows what agents wrote, and agents write anything: control characters in it are
shown as ``\\xNN`` escapes (render.printable), so that no agent can drive the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import trio

from hived import __version__
from hived.cli import history
from hived.cli.hook import command_word, hook_main
from hived.cli.render import (
    Painter,
    agents_table,
    connections_table,
    event_line,
    json_text,
    notifications_table,
    printable,
    sessions_table,
    status_text,
)
from hived.cli.settings import Usage, base_url, connection_options, read_token
from hived.client import (
    AuthError,
    Client,
    ClientError,
    Closed,
    ConnectError,
    FellBehind,
    RemoteError,
    connect,
)
from hived.core.messages import MAX_LIMIT

EXIT_OK: Final = 0
EXIT_REMOTE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECT: Final = 3
EXIT_AUTH: Final = 4
EXIT_INTERRUPTED: Final = 130

LOG_PAGE: Final = MAX_LIMIT
"""Events asked per ``session.events`` page: the most the protocol allows, so that reading a
long session takes few requests (each one counts against the rate limit)."""

EPILOG: Final = """\
environment: HIVED_URL (default: the listen address of the local config, else
ws://127.0.0.1:7420), HIVED_TOKEN, NO_COLOR.
exit status: 0 ok, 1 hived answered with an error or closed the connection,
2 usage, 3 cannot connect, 4 token or role refused, 130 interrupted. See hivectl(1).
"""

AMBIGUOUS_SHOWN: Final = 5
ENDED_STATES: Final = frozenset({"EXITED", "FAILED", "FATAL", "LOST"})
ADMIN_COMMANDS: Final = frozenset(
    {"status", "connections", "kick", "reload", "shutdown", "daemon", "forget", "notify"}
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, also read by the man-page completeness test."""
    common = connection_options()
    parser = argparse.ArgumentParser(
        prog="hivectl",
        description="Watch and steer the agent sessions of a hived daemon.",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hivectl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_, description=help_)

    command("status", "the daemon's state, connections and sessions")
    command("agents", "list the agent templates sessions can be started from")
    sessions = command("sessions", "list sessions")
    sessions.add_argument("--all", action="store_true", help="include ended sessions")
    sessions.add_argument(
        "--state", type=str.upper, help="only sessions in this state (e.g. WAITING)"
    )
    sessions.add_argument("--agent", help="only sessions of this agent template")
    start = command(
        "start",
        "start a session of an agent template; prints its id (exit 1 if it failed at once)",
    )
    start.add_argument("agent", metavar="AGENT")
    start.add_argument("--prompt", metavar="TEXT", help="first prompt")
    start.add_argument("--name", metavar="N", help="a name for the session")
    start.add_argument(
        "--cwd",
        metavar="DIR",
        help="working folder; must be inside one of the template's cwd_roots",
    )
    start.add_argument(
        "--max-cost-usd", type=float, metavar="USD", help="the session's budget in USD"
    )
    start.add_argument("--max-tokens", type=int, metavar="N", help="the session's budget in tokens")
    start.add_argument("args", nargs="*", metavar="ARGS", help="extra arguments, after --")
    send = command("send", "send a prompt to a session ('-' reads it from stdin)")
    send.add_argument("session", metavar="SESSION", type=session_ref)
    send.add_argument("text", metavar="TEXT")
    approve = command("approve", "allow a pending permission request (its id, or a prefix)")
    approve.add_argument("session", metavar="SESSION", type=session_ref)
    approve.add_argument("request", metavar="REQUEST")
    approve.add_argument(
        "--always", action="store_true", help="allow such calls from now on, where offered"
    )
    deny = command("deny", "refuse a pending request (its id, or a prefix)")
    deny.add_argument("session", metavar="SESSION", type=session_ref)
    deny.add_argument("request", metavar="REQUEST")
    deny.add_argument("--message", metavar="M", help="why, for the agent")
    answer = command(
        "answer", "answer an agent's question: each --answer 'QUESTION=ANSWER' (or just ANSWER)"
    )
    answer.add_argument("session", metavar="SESSION", type=session_ref)
    answer.add_argument("request", metavar="REQUEST")
    answer.add_argument(
        "--answer",
        dest="answers",
        action="append",
        required=True,
        metavar="Q=A",
        help="the answer to a question; without 'QUESTION=', to the only question asked",
    )
    resume = command(
        "resume", "go on with an ended session's conversation (claude, codex-app, acp)"
    )
    resume.add_argument("session", metavar="SESSION", type=session_ref)
    resume.add_argument("prompt", nargs="?", metavar="PROMPT", help="a prompt to go on with")
    for name, help_ in (
        ("interrupt", "interrupt the session's current turn"),
        ("stop", "stop a session (SIGTERM, grace, SIGKILL)"),
        (
            "restart",
            "stop a session and run it again as the same session (claude resumes its "
            "conversation; other agents start afresh with the first prompt)",
        ),
    ):
        command(name, help_).add_argument("session", metavar="SESSION", type=session_ref)
    tail = command(
        "tail",
        "follow events live: a session's, or with 'sessions' (the default, without an "
        "argument) every session's state changes",
    )
    tail.add_argument(
        "target", nargs="?", default="sessions", metavar="SESSION|sessions", type=session_ref
    )
    logs = command("logs", "print a session's stored events")
    logs.add_argument("session", metavar="SESSION", type=session_ref)
    logs.add_argument("-f", "--follow", action="store_true", help="then follow live events")
    history.add_parsers(command, logs, session_ref)
    command("connections", "list the open WebSocket connections")
    kick = command("kick", "close a connection")
    kick.add_argument("id", metavar="ID", type=int)
    kick.add_argument("--reason", help="told to the client in the close frame")
    command("reload", "re-read the config file (like SIGHUP)")
    command("shutdown", "stop the daemon gracefully, and its agents")
    command(
        "daemon", "daemon restart: restart hived in place, its agents left running (an upgrade)"
    ).add_argument("action", choices=["restart"])
    notifications = command(
        "notifications", "the last notifications born, newest first, with their outcome"
    )
    notifications.add_argument(
        "-n", "--limit", type=int, default=20, metavar="N", help="how many (default 20)"
    )
    notify = command("notify", "notify test RULE: send a test message through a [[notify]] rule")
    notify.add_argument("action", choices=["test"])
    notify.add_argument("rule", metavar="RULE")
    command("hook", "post a Claude Code hook payload from stdin (always exits 0)")
    return parser


def session_ref(value: str) -> str:
    """A SESSION argument: an id, an id prefix or a name, never empty."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "SESSION must not be empty: give an id, an id prefix or a name"
        )
    return value


class Output:
    """Where results go: JSON for scripts, or text (coloured on a terminal) for people."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.paint = Painter(colour)

    def data(self, value: Any, text: Callable[[], str]) -> None:
        if self.json:
            sys.stdout.write(json_text(value) + "\n")
        else:
            sys.stdout.write(text() + "\n")
        sys.stdout.flush()

    def resumed(self, topic: str, seq: int) -> None:
        """A note for people that the connection dropped and the events go on where they were."""
        colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        note = f"reconnected; resumed from seq {seq}"
        sys.stderr.write(Painter(colour)(note, "dim") + "\n")
        sys.stderr.flush()

    def event(self, event: dict[str, Any], show_session: bool) -> None:
        self.data(event, lambda: event_line(event, self.paint, show_session=show_session))


async def resolve_session(client: Client, ref: str) -> dict[str, Any]:
    """A session's summary from its id, its name, or a unique prefix of its id.

    The same rules and words as hived's own lookup: a name shared by several sessions means
    the live one, else the newest; a prefix matches whatever its case (ids are upper case).
    """
    sessions = await list_sessions(client, all=True)
    for summary in sessions:
        if summary.get("id") == ref:
            return dict(summary)
    named = [s for s in sessions if s.get("name") == ref]
    if named:
        live = [s for s in named if s.get("state") not in ENDED_STATES]
        return dict((live or named)[0])  # newest first
    matches = [s for s in sessions if str(s.get("id", "")).startswith(ref.upper())]
    if len(matches) == 1:
        return dict(matches[0])
    if not matches:
        # hived's own lookup says why: no such session, or one that was forgotten (and when).
        page = await client.request("session.events", session=ref, limit=1)
        if not isinstance(page, dict) or not isinstance(page.get("session"), str):
            raise RemoteError(
                "not_found", f"no session {ref!r} (give an id, an id prefix or a name)"
            )
        return {"id": page["session"], "name": ref, "state": "?"}
    names = ", ".join(f"{s.get('id')} ({s.get('name')})" for s in matches[:AMBIGUOUS_SHOWN])
    more = " and more" if len(matches) > AMBIGUOUS_SHOWN else ""
    raise RemoteError("bad_request", f"session {ref!r} is ambiguous: it matches {names}{more}")


def say_which(what: str, session: dict[str, Any]) -> None:
    """Tell on stderr which session a name was taken to mean (stdout stays the data): a name
    shared by an ended session and a live one means the live one, for every command."""
    name = printable(session.get("name") or session.get("id"))
    sys.stderr.write(f"{what} {name} ({printable(session.get('id'))}, {session.get('state')})\n")
    sys.stderr.flush()


async def run_command(args: argparse.Namespace, out: Output) -> int:
    url = base_url(getattr(args, "url", None))
    token = read_token(args)
    if token is None:
        raise AuthError("no token: set HIVED_TOKEN, or pass --token or --token-file")
    channel = "/v1/admin" if args.command in ADMIN_COMMANDS else "/v1/ws"
    reconnect = args.command in ("tail", "logs")
    on_resume = None if out.json else out.resumed
    async with connect(url + channel, token, reconnect=reconnect, on_resume=on_resume) as client:
        return await COMMANDS[args.command](client, args, out)


async def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    status = await client.request("status")
    out.data(status, lambda: status_text(status, out.paint))
    return EXIT_OK


async def cmd_agents(client: Client, args: argparse.Namespace, out: Output) -> int:
    agents = (await client.request("agents")).get("agents", [])
    out.data(agents, lambda: agents_table(agents))
    return EXIT_OK


async def list_sessions(client: Client, **fields: Any) -> list[dict[str, Any]]:
    """Every session summary the filters in ``fields`` select, page after page (a reply is
    bounded in bytes; its ``next`` asks for the rest)."""
    return await client.request_all("sessions", "sessions", **fields)


async def cmd_sessions(client: Client, args: argparse.Namespace, out: Output) -> int:
    sessions = await list_sessions(client, all=args.all or None, state=args.state, agent=args.agent)
    out.data(sessions, lambda: sessions_table(sessions, out.paint))
    return EXIT_OK


async def cmd_start(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request(
        "session.start",
        agent=args.agent,
        prompt=args.prompt,
        name=args.name,
        cwd=args.cwd,
        args=args.args or None,
        max_cost_usd=args.max_cost_usd,
        max_tokens=args.max_tokens,
    )
    out.data(result, lambda: printable(result.get("session")))
    if result.get("state") == "FAILED":
        # The id still goes to stdout, so that a script can look the session up.
        name = args.name or result.get("name") or result.get("session")
        return _fail(f"{name} FAILED: {result.get('reason') or 'no reason given'}", EXIT_REMOTE)
    return EXIT_OK


async def cmd_send(client: Client, args: argparse.Namespace, out: Output) -> int:
    # A TEXT of "-" was read from stdin by main(), before connecting.
    result = await client.request("session.input", session=args.session, text=args.text)
    out.data(result, lambda: "sent")
    return EXIT_OK


async def _approve(client: Client, args: argparse.Namespace, out: Output, allow: bool) -> int:
    result = await client.request(
        "session.approve",
        session=args.session,
        request_id=args.request,
        allow=allow,
        message=getattr(args, "message", None),
        always=getattr(args, "always", False),
    )
    out.data(result, lambda: "allowed" if allow else "denied")
    return EXIT_OK


async def cmd_answer(client: Client, args: argparse.Namespace, out: Output) -> int:
    answers: dict[str, str] = {}
    for given in args.answers:
        question, sep, text = given.partition("=")
        if not sep:
            question, text = "", given
        answers[question] = text
    if "" in answers:
        answers = await _fill_in_question(client, args, answers)
    result = await client.request(
        "session.answer", session=args.session, request_id=args.request, answers=answers
    )
    out.data(result, lambda: "answered")
    return EXIT_OK


async def _fill_in_question(
    client: Client, args: argparse.Namespace, answers: dict[str, str]
) -> dict[str, str]:
    """An answer given without its question goes to the request's only question."""
    page = await client.request("session.events", session=args.session, limit=10000)
    questions: list[str] = []
    for event in page["events"]:
        data = event.get("data", {})
        if event.get("kind") == "permission_request" and str(
            data.get("request_id", "")
        ).lower().startswith(args.request.lower()):
            asked = data.get("input", {}).get("questions") or []
            questions = [q.get("question", "") for q in asked if isinstance(q, dict)]
    if len(questions) != 1:
        raise Usage(
            f"request {args.request} asks {len(questions)} questions: give each as "
            "--answer 'QUESTION=ANSWER'"
        )
    return {questions[0]: answers.pop("")} | answers


async def cmd_resume(client: Client, args: argparse.Namespace, out: Output) -> int:
    fields = {} if args.prompt is None else {"prompt": args.prompt}
    result = await client.request("session.resume", session=args.session, **fields)
    out.data(result, lambda: f"resumed: {printable(result.get('session', args.session))}")
    return EXIT_OK


async def cmd_approve(client: Client, args: argparse.Namespace, out: Output) -> int:
    return await _approve(client, args, out, allow=True)


async def cmd_deny(client: Client, args: argparse.Namespace, out: Output) -> int:
    return await _approve(client, args, out, allow=False)


def _session_command(wire_type: str, done: str) -> Callable[..., Coroutine[Any, Any, int]]:
    async def run(client: Client, args: argparse.Namespace, out: Output) -> int:
        result = await client.request(wire_type, session=args.session)
        out.data(result, lambda: f"{done}: {printable(result.get('session', args.session))}")
        return EXIT_OK

    return run


async def cmd_tail(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.target == "sessions":
        topic, show_session = "sessions", True
    else:
        session = await resolve_session(client, args.target)
        say_which("following", session)
        topic, show_session = f"session/{session['id']}", False
        # Someone follows it: its notifications wait (hived's attention rule).
        await client.watch(session["id"])
    return await follow(client, topic, None, out, show_session)


async def follow(
    client: Client,
    topic: str,
    since: int | None,
    out: Output,
    show_session: bool,
    wanted: Callable[[dict[str, Any]], bool] | None = None,
) -> int:
    """Print a topic's events until interrupted; raises why the subscription ended.

    The client reconnects and resumes by itself; a subscription that fell behind (the
    terminal or pipe reads slower than hived sends) is taken up again where it stopped.
    """
    while True:
        subscription = await client.subscribe(topic, since=since)
        try:
            async for event in subscription:
                if wanted is None or wanted(event):
                    out.event(event, show_session)
        except FellBehind as exc:
            since = exc.last_seq
            continue
        return EXIT_OK


async def cmd_logs(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await resolve_session(client, args.session)
    say_which("logs of", session)
    wanted = history.LogFilter(args)
    tail = history.Tail(args.tail, lambda event: out.event(event, show_session=False))
    since = 0
    while True:
        page = await client.request(
            "session.events", session=session["id"], since=since, limit=LOG_PAGE
        )
        events = page.get("events", [])
        for event in events:
            if wanted(event):
                tail.add(event)
            since = max(since, int(event.get("seq", since)))
        if len(events) < LOG_PAGE:
            break
    tail.flush()
    if args.follow:
        return await follow(
            client, f"session/{session['id']}", since, out, show_session=False, wanted=wanted
        )
    return EXIT_OK


async def cmd_search(client: Client, args: argparse.Namespace, out: Output) -> int:
    return await history.cmd_search(client, args, out.paint, out.json)


async def cmd_usage(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request("usage", by=args.by, since=args.since, until=args.until)
    out.data(result, lambda: history.usage_table(result))
    return EXIT_OK


async def cmd_export(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await resolve_session(client, args.session)
    say_which("transcript of", session)
    return await history.cmd_export(client, args, str(session["id"]))


async def cmd_forget(client: Client, args: argparse.Namespace, out: Output) -> int:
    if (args.session is None) == (args.ended_before is None):
        raise RemoteError("bad_request", "give a SESSION or --ended-before TIME (one of them)")
    if args.session is not None:
        result = await client.request("session.forget", session=args.session)
    else:
        result = await client.request("session.forget", ended_before=args.ended_before)
    out.data(result, lambda: history.forgotten_text(result))
    return EXIT_OK


async def cmd_connections(client: Client, args: argparse.Namespace, out: Output) -> int:
    connections = await client.request_all("connections", "connections")
    out.data(connections, lambda: connections_table(connections))
    return EXIT_OK


async def cmd_kick(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request("connection.kick", connection=args.id, reason=args.reason)
    out.data(result, lambda: f"closed connection {args.id}")
    return EXIT_OK


async def cmd_reload(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request("config.reload")

    def text() -> str:
        if not result.get("reloaded"):
            errors = [printable(error) for error in result.get("errors", [])]
            return "config refused; the running one is kept:\n" + "\n".join(errors)
        changed = ", ".join(printable(key) for key in result.get("changed", []))
        lines = [f"reloaded; changed: {changed or 'nothing'}"]
        lines += [f"needs a restart: {printable(key)}" for key in result.get("restart_needed", [])]
        return "\n".join(lines)

    out.data(result, text)
    return EXIT_OK if result.get("reloaded") else EXIT_REMOTE


async def cmd_daemon(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request("daemon.restart")
    out.data(result, lambda: "hived is restarting; its agents go on")
    return EXIT_OK


async def cmd_notifications(client: Client, args: argparse.Namespace, out: Output) -> int:
    if not 1 <= args.limit <= 1000:
        raise Usage(f"--limit must be from 1 to 1000, got {args.limit}")
    rows = await client.request_all("notifications", "notifications", most=args.limit)
    out.data(rows, lambda: notifications_table(rows, out.paint))
    return EXIT_OK


async def cmd_notify(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request("notify.test", rule=args.rule)

    def text() -> str:
        where = f"{printable(args.rule)} ({printable(result.get('destination'))})"
        if result.get("sent"):
            return f"sent a test message through {where}"
        return f"not sent through {where}: {printable(result.get('error'))}"

    out.data(result, text)
    return EXIT_OK if result.get("sent") else EXIT_REMOTE


async def cmd_shutdown(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = await client.request("daemon.stop")
    out.data(result, lambda: "hived is stopping")
    return EXIT_OK


COMMANDS: Final[
    dict[str, Callable[[Client, argparse.Namespace, Output], Coroutine[Any, Any, int]]]
] = {
    "status": cmd_status,
    "agents": cmd_agents,
    "sessions": cmd_sessions,
    "start": cmd_start,
    "send": cmd_send,
    "approve": cmd_approve,
    "deny": cmd_deny,
    "answer": cmd_answer,
    "resume": cmd_resume,
    "interrupt": _session_command("session.interrupt", "interrupted"),
    "stop": _session_command("session.stop", "stopped"),
    "restart": _session_command("session.restart", "restarted"),
    "tail": cmd_tail,
    "logs": cmd_logs,
    "search": cmd_search,
    "usage": cmd_usage,
    "export": cmd_export,
    "forget": cmd_forget,
    "connections": cmd_connections,
    "kick": cmd_kick,
    "reload": cmd_reload,
    "shutdown": cmd_shutdown,
    "daemon": cmd_daemon,
    "notifications": cmd_notifications,
    "notify": cmd_notify,
}


def _fail(message: str, code: int, hint: str = "") -> int:
    """Say what went wrong on stderr; ``message`` may quote hived, so it is made printable."""
    sys.stderr.write(f"hivectl: {printable(message)}\n{hint}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hivectl`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if command_word(argv) == "hook":
        return hook_main(argv)
    args = build_parser().parse_args(argv)
    if args.command == "send" and args.text == "-":
        # Before connecting: a slow writer on stdin must not hold up the connection's tasks
        # (the heartbeat would drop it).
        try:
            args.text = sys.stdin.read()
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    out = Output(bool(getattr(args, "json", False)))
    try:
        return trio.run(run_command, args, out)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Usage as exc:
        return _fail(str(exc), EXIT_USAGE)
    except AuthError as exc:
        return _fail(f"refused: {exc}", EXIT_AUTH)
    except ConnectError as exc:
        return _fail(str(exc), EXIT_CONNECT, "Is hived running? Try: systemctl status hived\n")
    except RemoteError as exc:
        code = EXIT_AUTH if exc.code == "forbidden" else EXIT_REMOTE
        return _fail(f"{exc.code}: {exc.message}", code)
    except Closed as exc:
        return _fail(str(exc), EXIT_REMOTE)
    except ClientError as exc:
        return _fail(str(exc), EXIT_CONNECT)
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
