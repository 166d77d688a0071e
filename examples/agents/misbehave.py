#!/usr/bin/env python3
"""Agents that behave badly on purpose, for the supervisor's tests. Standard library only.

misbehave.py ignore-term     ignore SIGTERM, start a grandchild that ignores it too, print
                             "pid <own pid> <grandchild pid>", then sleep forever
misbehave.py exit CODE       exit at once with CODE
misbehave.py flood N [--jsonl] [--rate R]
                             print N lines of about LINE_BYTES bytes as fast as possible, or
                             R lines a second ("line <i> " padded with dots, or JSON objects),
                             then exit 0
misbehave.py bigline BYTES   print one line of BYTES bytes (plus its newline), then "after"
misbehave.py garbage         print invalid UTF-8, and a last line without a newline
misbehave.py sleep           print "ready", then sleep until killed
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

LINE_BYTES = 300
"""The size of a ``flood`` line, newline included."""

GARBAGE = (
    b"\xff\xfe\xfd not utf-8 at all\n"
    b"half a character: \xc3\n"
    b'{"type": "system", "subtype": "init", "session_id": "\xe2\x28\xa1"}\n'
    b"a good line in between\n"
    b"\x00\x01\x02 control bytes \x1b[31m red \x1b[0m\n"
    b"the last line has no newline \xf0\x9f"
)
"""What ``garbage`` prints: bad bytes, a JSON line with bad bytes, no final newline."""


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def ignore_term() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # SIG_IGN is inherited across exec, and the grandchild sets it again itself anyway.
    grandchild = subprocess.Popen([sys.executable, os.path.abspath(__file__), "grandchild"])
    print(f"pid {os.getpid()} {grandchild.pid}", flush=True)
    sleep_forever()


def grandchild() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep_forever()


def flood(count: int, jsonl: bool, rate: float = 0.0) -> None:
    out = sys.stdout.buffer
    started = time.monotonic()
    for i in range(count):
        if rate and i % 100 == 0:
            out.flush()
            time.sleep(max(started + i / rate - time.monotonic(), 0))
        if jsonl:
            head = json.dumps({"type": "flood", "i": i, "pad": ""})[:-2]
            line = head + "." * max(LINE_BYTES - len(head) - 3, 0) + '"}\n'
        else:
            head = f"line {i} "
            line = head + "." * max(LINE_BYTES - len(head) - 1, 0) + "\n"
        out.write(line.encode())
    out.flush()


def bigline(size: int) -> None:
    out = sys.stdout.buffer
    out.write(b"x" * size + b"\n")
    out.write(b"after\n")
    out.flush()


def garbage() -> None:
    sys.stdout.buffer.write(GARBAGE)
    sys.stdout.buffer.flush()


def sleep() -> None:
    print("ready", flush=True)
    sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Agents that behave badly on purpose.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ignore-term")
    commands.add_parser("grandchild")
    commands.add_parser("exit").add_argument("code", type=int)
    flood_parser = commands.add_parser("flood")
    flood_parser.add_argument("count", type=int)
    flood_parser.add_argument("--jsonl", action="store_true")
    flood_parser.add_argument("--rate", type=float, default=0.0)
    commands.add_parser("bigline").add_argument("size", type=int)
    commands.add_parser("garbage")
    commands.add_parser("sleep")
    args = parser.parse_args()

    match args.command:
        case "ignore-term":
            ignore_term()
        case "grandchild":
            grandchild()
        case "exit":
            sys.exit(args.code)
        case "flood":
            flood(args.count, args.jsonl, args.rate)
        case "bigline":
            bigline(args.size)
        case "garbage":
            garbage()
        case "sleep":
            sleep()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        os._exit(0)
