#!/usr/bin/env python3
"""A plain-text agent for hived's demo and tests: a greeting, then an echo of every input line.

Prints ``GREETING``, then ``you said: <line>`` for each line read on stdin. Exits 0 at the end of
input and on SIGTERM. Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys

GREETING = "fake_text ready: type a line and I will echo it"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(0))
    print(GREETING, flush=True)
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        print(f"you said: {line}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        os._exit(0)
