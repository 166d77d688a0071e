"""``hivectl hook``: post one Claude Code hook payload from stdin to hived.

It runs as a Claude Code ``command`` hook, on every tool call: it must be quick and must never
fail the agent. A command hook that exits 2 blocks the tool call, so this always exits 0 —
whatever its arguments, whether hived answers or not — and says what went wrong on stderr.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Final

from hived.cli.settings import Usage, base_url, connection_options, read_token

EXIT_OK: Final = 0
HOOK_TIMEOUT_S: Final = 2.0


def command_word(argv: Sequence[str]) -> str | None:
    """The COMMAND of a command line, found without argparse (which exits on a mistake)."""
    words = iter(argv)
    for word in words:
        if word in ("--url", "--token", "--token-file"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def hook_parser() -> argparse.ArgumentParser:
    """``hivectl hook`` alone: the connection options and the command word (the whole command
    line of hivectl, with its imports, would cost the hook most of its time)."""
    parser = argparse.ArgumentParser(prog="hivectl", parents=[connection_options()])
    parser.add_argument("command", choices=["hook"])
    return parser


def hook_main(argv: Sequence[str]) -> int:
    """``hivectl hook``: always exit 0, since a Claude Code command hook that exits 2 blocks
    the tool call; a mistake in the arguments is only noted on stderr."""
    parser = hook_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:
        if exc.code:
            sys.stderr.write("hivectl hook: bad arguments (see above); posting nothing\n")
        return EXIT_OK
    if unknown:
        sys.stderr.write(f"hivectl hook: ignoring unknown arguments: {' '.join(unknown)}\n")
    return post_hook(args)


def post_hook(args: argparse.Namespace) -> int:
    """Post one hook payload; never fail the agent: exit 0, with a note on stderr if it failed."""
    payload = sys.stdin.buffer.read()
    try:
        url = urllib.parse.urlsplit(base_url(getattr(args, "url", None)))
        token = read_token(args)
        if not token:
            sys.stderr.write("hivectl hook: no token: set HIVED_TOKEN\n")
            return EXIT_OK
        connection_class = (
            http.client.HTTPSConnection if url.scheme == "wss" else http.client.HTTPConnection
        )
        connection = connection_class(url.netloc, timeout=HOOK_TIMEOUT_S)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        connection.request("POST", "/v1/hooks/claude", body=payload, headers=headers)
        response = connection.getresponse()
        body = response.read().decode(errors="replace").strip()
        if response.status >= 300:
            sys.stderr.write(f"hivectl hook: hived answered {response.status}: {body}\n")
    except (OSError, Usage, http.client.HTTPException) as exc:
        sys.stderr.write(f"hivectl hook: could not post to hived: {exc}\n")
    return EXIT_OK
