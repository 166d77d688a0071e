"""What an agent inherits of the daemon's environment: a short allowlist, then its template's."""

from __future__ import annotations

from hived.core.agentenv import agent_environ


def test_an_agent_gets_the_allowed_variables_and_its_templates() -> None:
    daemon = {
        "PATH": "/usr/bin",
        "HOME": "/var/lib/hived",
        "LANG": "C.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "HIVED_TOKEN": "the admin's secret",
        "AWS_SECRET_ACCESS_KEY": "another secret",
        "IS_SANDBOX": "1",
        **{
            name: "systemd's, for hived alone"
            for name in (
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "LISTEN_FDS",
                "LISTEN_PID",
                "LISTEN_FDNAMES",
            )
        },
    }
    template = {"ANTHROPIC_API_KEY": "the agent's key", "PATH": "/opt/agent/bin:/usr/bin"}
    assert agent_environ(daemon, template) == {
        "PATH": "/opt/agent/bin:/usr/bin",
        "HOME": "/var/lib/hived",
        "LANG": "C.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "ANTHROPIC_API_KEY": "the agent's key",
    }
