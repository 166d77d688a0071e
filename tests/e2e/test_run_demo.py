"""``make run``'s wrapper (examples/run_demo.py): the demo banner only once hived is ready, and
hived's own exit status, so that a second ``make run`` fails without a banner."""

from __future__ import annotations

import signal
import subprocess

import trio

from tests.e2e.harness import PYTHON, REPO, Launcher

RUN_DEMO = str(REPO / "examples" / "run_demo.py")


async def test_the_banner_comes_once_hived_is_ready_and_never_before_a_failed_start(
    hived: Launcher,
) -> None:
    first = await hived.start()  # holds the state folder
    with trio.fail_after(30):
        second = await trio.run_process(
            [PYTHON, RUN_DEMO, str(first.config_path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert second.returncode == 1
    assert b"hived demo:" not in second.stdout
    assert b"state" in second.stderr  # hived's own reason: the folder is held

    first.send_signal(signal.SIGTERM)
    assert await first.wait_exit() == 0
    demo = await trio.lowlevel.open_process(
        [PYTHON, RUN_DEMO, str(first.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert demo.stdout is not None
    try:
        seen = b""
        with trio.fail_after(30):
            while b"(Ctrl-C stops hived)" not in seen:
                seen += await demo.stdout.receive_some(4096)
        assert seen.startswith(b"hived demo: dashboard http://")
    finally:
        demo.send_signal(signal.SIGTERM)  # passed on to hived, which stops cleanly
        with trio.fail_after(30):
            assert await demo.wait() == 0
