"""The ``[cluster]`` section: optional, strict, and never holding a password."""

from __future__ import annotations

from pathlib import PurePath

import pytest

from hived.core.config import Config, parse_config, restart_needed
from hived.core.errors import ConfigError

CLUSTER = """
[cluster]
node = "build-1"
url = "rediss://hived@engine.example:6380/2"
password_file = "engine.pass"
tls_ca = "ca.pem"
key_prefix = "team:hived"
heartbeat_interval_s = 1.5
request_timeout_s = 4
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return list(info.value.problems)


def test_without_a_cluster_section_nothing_of_it_is_configured() -> None:
    assert parse_config("").cluster is None
    assert Config().cluster is None


def test_every_cluster_key_loads_and_paths_resolve_beside_the_file() -> None:
    cluster = parse_config(CLUSTER, base_dir=PurePath("/etc/hived")).cluster
    assert cluster is not None
    assert (cluster.node, cluster.url) == ("build-1", "rediss://hived@engine.example:6380/2")
    assert cluster.password_file == "/etc/hived/engine.pass"
    assert cluster.tls_ca == "/etc/hived/ca.pem"
    assert cluster.key_prefix == "team:hived"
    assert (cluster.heartbeat_interval_s, cluster.request_timeout_s) == (1.5, 4.0)


def test_the_defaults_need_only_a_node_and_a_url() -> None:
    cluster = parse_config('[cluster]\nnode = "a"\nurl = "redis://127.0.0.1:6379"\n').cluster
    assert cluster is not None
    assert (cluster.key_prefix, cluster.heartbeat_interval_s) == ("hived", 2.0)
    assert (cluster.password_file, cluster.tls_ca) == (None, None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('url = "redis://h:1"', "cluster.node: required, but missing"),
        ('node = "a"', "cluster.url: required, but missing"),
        ('node = "a b"\nurl = "redis://h:1"', "cluster.node: expected letters, digits"),
        ('node = "a"\nurl = "http://h:1"', 'cluster.url: expected a URL starting with "redis://"'),
        (
            'node = "a"\nurl = "redis://u:secret@h:1"',
            "cluster.url: expected no password in the URL",
        ),
        ('node = "a"\nurl = "redis://h:99999"', "cluster.url: expected a host and a port"),
        ('node = "a"\nurl = "redis://h:1/x"', "cluster.url: expected a database number"),
        ('node = "a"\nurl = "redis://h:1"\nkey_prefix = "a b"', "cluster.key_prefix: expected"),
        (
            'node = "a"\nurl = "redis://h:1"\nheartbeat_interval_s = 0',
            "cluster.heartbeat_interval_s",
        ),
        ('node = "a"\nurl = "redis://h:1"\nnodes = 3', "cluster.nodes: unknown key"),
        (
            'node = "a"\nurl = "redis://h:1"\ntls_ca = "ca.pem"',
            'cluster.tls_ca: only with a "rediss://"',
        ),
    ],
)
def test_each_cluster_mistake_is_named_with_its_key(body: str, expected: str) -> None:
    found = problems(f"[cluster]\n{body}\n")
    assert len(found) == 1, found
    assert expected in found[0]
    assert "secret" not in found[0], "a password never reaches a message"


def test_a_cluster_change_waits_for_a_restart() -> None:
    old = parse_config('[cluster]\nnode = "a"\nurl = "redis://h:1"\n')
    assert restart_needed(old, parse_config("")) == ["cluster"]
    assert restart_needed(old, old) == []
