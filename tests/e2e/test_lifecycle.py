"""The real daemon's lifecycle: READY, reload on SIGHUP, graceful and forced stop, bad config."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import orjson
import trio

from tests.e2e.harness import AGENTS, Launcher, http_get


async def test_reports_ready_and_serves_healthz(hived: Launcher) -> None:
    daemon = await hived.start()
    status, headers, body = await http_get(daemon.port, "/healthz")
    assert status == 200
    assert orjson.loads(body)["status"] == "serving"
    assert headers["connection"] == "close"
    await daemon.wait_notified("STATUS=serving")
    assert f"listening on 127.0.0.1:{daemon.port}" in daemon.log()


async def test_sighup_with_a_broken_config_keeps_running_and_logs_every_error(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + '\n[agents.broken]\ncommand = "x"\nidle_s = 0\n')
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_notified("RELOADING=1")
    await daemon.wait_for(lambda: "kept the running config" in daemon.log(), "the reload refusal")
    log = daemon.log()
    assert "agents.broken.command: expected a non-empty list of strings" in log
    assert "agents.broken.idle_s: expected a duration greater than 0" in log
    assert "MONOTONIC_USEC=" in "".join(daemon.notifications)
    status, _, _ = await http_get(daemon.port, "/healthz")
    assert status == 200
    assert daemon.proc.poll() is None


async def test_sighup_with_a_changed_valid_config_applies_it(hived: Launcher) -> None:
    daemon = await hived.start()
    daemon.config_path.write_text(
        daemon.config_path.read_text() + '\n[agents.extra]\ncommand = ["true"]\n'
    )
    daemon.notifications.clear()
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_notified("RELOADING=1")
    await daemon.wait_notified("READY=1")
    await daemon.wait_for(lambda: "reload: applied" in daemon.log(), "the reload")
    assert "changed: agents.extra" in daemon.log()


async def test_sigterm_stops_with_exit_0_and_stopping(hived: Launcher) -> None:
    daemon = await hived.start()
    daemon.send_signal(signal.SIGTERM)
    await daemon.wait_notified("STOPPING=1")
    assert await daemon.wait_exit(timeout_s=15) == 0
    assert "stopped" in daemon.log()


async def test_second_sigint_during_a_slow_stop_exits_at_once(hived: Launcher) -> None:
    port, config = hived.config(
        body=(
            f'[agents.stubborn]\ncommand = ["{sys.executable}", "{AGENTS / "misbehave.py"}", '
            f'"ignore-term"]\nrestart = "no"\nstop_timeout_s = 60.0\nautostart = 1\n'
        )
    )
    config = config.replace("shutdown_timeout_s = 10.0", "shutdown_timeout_s = 60.0")
    daemon = await hived.start(config, port=port)
    await daemon.wait_for(lambda: "pid " in daemon.log() or "RUNNING" in daemon.log(), "the agent")
    daemon.send_signal(signal.SIGINT)
    await daemon.wait_notified("STOPPING=1")
    daemon.send_signal(signal.SIGINT)
    assert await daemon.wait_exit(timeout_s=5) == 1
    assert "stopping at once" in daemon.log()


async def test_bad_config_at_start_exits_78_with_the_errors_on_stderr(hived: Launcher) -> None:
    port, config = hived.config()
    daemon = await hived.start(config.replace(f"127.0.0.1:{port}", "7420"), ready=False)
    assert await daemon.wait_exit() == 78
    assert 'server.listen: expected "host:port", got "7420"' in daemon.log()


async def test_a_taken_port_fails_start_with_one_line_and_exit_1(hived: Launcher) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _, config = hived.config()
        config = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", config, count=1)
        daemon = await hived.start(config, port=port, ready=False)
        assert await daemon.wait_exit() == 1
    log = daemon.log()
    assert (
        f"cannot run: cannot listen on 127.0.0.1:{port} (server.listen): "
        "address already in use — is another hived running?"
    ) in log
    assert "Traceback" not in log


async def test_a_host_that_does_not_resolve_fails_start_naming_the_key(hived: Launcher) -> None:
    port, config = hived.config()
    config = config.replace(f"127.0.0.1:{port}", f"not a host:{port}", 1)
    daemon = await hived.start(config, port=port, ready=False)
    assert await daemon.wait_exit() == 1
    log = daemon.log()
    assert f"cannot run: cannot listen on not a host:{port} (server.listen): " in log
    assert "Traceback" not in log


async def test_a_tls_key_that_does_not_load_is_a_config_error(
    hived: Launcher, tmp_path: Path
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    port, config = hived.config(server='tls_cert = "cert.pem"\ntls_key = "key.pem"')
    daemon = await hived.start(config, port=port, ready=False)
    assert await daemon.wait_exit() == 78
    assert "server.tls_cert/tls_key: cannot load" in daemon.log()
    assert "Traceback" not in daemon.log()
    checked = await trio.run_process(
        [
            sys.executable,
            "-m",
            "hived.cli.hived",
            "check-config",
            "--config",
            str(daemon.config_path),
        ],
        capture_stderr=True,
        check=False,
    )
    assert checked.returncode == 78
    assert b"server.tls_cert/tls_key: cannot load" in checked.stderr
