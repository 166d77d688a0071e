"""The ``hivectl`` console script: ``hivectl hook`` on the standard library alone.

``hivectl hook`` runs as a Claude Code command hook, on every tool call of every session that
reports to hived, and the agent waits for it. So the script looks at its command word first:
for ``hook`` it imports only hook.py (the standard library's HTTP client), about a tenth of the
start-up time of the rest of hivectl, which imports trio and the WebSocket client.
"""

from __future__ import annotations

import sys

from hived.cli.hook import command_word, hook_main


def hivectl() -> int:
    argv = sys.argv[1:]
    if command_word(argv) == "hook":
        return hook_main(argv)
    from hived.cli.hivectl import main  # imported here: the point of this module

    return main(argv)
