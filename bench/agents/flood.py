#!/usr/bin/env python3
"""The benchmark's flooding agent: lines of LINE_BYTES bytes on stdout, each with its send time.

    flood.py COUNT [--rate LINES_PER_S] [--wait]

Each line is ``flood <i> <t_ns> `` padded with dots to LINE_BYTES bytes (newline included), where
``t_ns`` is ``time.monotonic_ns()`` when the line was written: CLOCK_MONOTONIC is one clock for the
whole machine, so a subscriber in another process measures "stdout line → subscriber" latency as
its own ``monotonic_ns()`` minus ``t_ns``.

``--wait`` reads one line from stdin before the first line is printed, so the benchmark can
subscribe every client before anything flows (no race with the session's start). ``--rate 0``
(the default) prints as fast as the pipe takes it; ``--rate R`` paces R lines a second on an
absolute schedule, flushing each line. Standard library only: the same program feeds hived and the
peer server.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

LINE_BYTES = 300
"""The size of a line, newline included."""


def line(i: int) -> bytes:
    head = f"flood {i} {time.monotonic_ns()} "
    return (head + "." * (LINE_BYTES - len(head) - 1) + "\n").encode()


def burst(count: int) -> None:
    out = sys.stdout.buffer
    for i in range(count):
        out.write(line(i))
    out.flush()


def paced(count: int, rate: float) -> None:
    out = sys.stdout.buffer
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.write(line(i))
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="Print COUNT timestamped lines, fast or paced.")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=0.0, help="lines per second; 0: no limit")
    parser.add_argument("--wait", action="store_true", help="read one stdin line first")
    args = parser.parse_args()
    if args.wait:
        sys.stdin.readline()
    if args.rate > 0:
        paced(args.count, args.rate)
    else:
        burst(args.count)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        os._exit(0)
