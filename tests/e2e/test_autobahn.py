"""The Autobahn WebSocket test suite against the real daemon, through the ``kosoku`` runner.

The cases need a server that echoes what it gets: hived serves one at ``/v1/echo`` only in a
test build (``HIVED_TEST_ECHO=1`` in its environment, never a config key), through the same
accept path, WebSocket library and frame writer as its clients' connections. The suite here
runs the protocol cases (1–7, 10: framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
closing, auto-fragmentation) and expects every one to pass; the score of the whole suite,
performance (9) and compression (12, 13) included, is in docs/internals.md.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Final

import pytest
import trio

from tests.e2e.harness import Launcher, http_get

kosoku = pytest.importorskip("kosoku", reason="the Autobahn runner is a test extra")

pytestmark = pytest.mark.e2e

PROTOCOL_CASES: Final = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]


async def test_the_autobahn_protocol_cases_all_pass_against_the_echo_endpoint(
    hived: Launcher,
) -> None:
    daemon = await hived.start(env={"HIVED_TEST_ECHO": "1"})
    url = f"ws://127.0.0.1:{daemon.port}/v1/echo"

    def run() -> list[object]:
        try:
            return list(
                asyncio.run(kosoku.run_fuzzingclient(url, cases=PROTOCOL_CASES, concurrency=4))
            )
        except kosoku.FailureError as exc:
            return list(exc.results)

    with trio.fail_after(120):
        results = await trio.to_thread.run_sync(run)
    verdicts = Counter((r.behavior.value, r.behavior_close.value) for r in results)  # type: ignore[attr-defined]
    failed = [
        (r.case_id, r.behavior.value, r.behavior_close.value)  # type: ignore[attr-defined]
        for r in results
        if r.behavior.value not in ("OK", "NON-STRICT", "INFORMATIONAL")  # type: ignore[attr-defined]
        or r.behavior_close.value not in ("OK", "INFORMATIONAL")  # type: ignore[attr-defined]
    ]
    assert not failed, failed
    assert len(results) > 240, verdicts
    assert "Traceback" not in daemon.log()


async def test_the_echo_endpoint_is_not_served_without_the_test_build_variable(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    status, _, _ = await http_get(daemon.port, "/v1/echo")
    assert status == 404
