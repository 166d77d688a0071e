"""Tokens, roles, the Bearer header and the Origin rule (hived/core/auth.py)."""

from __future__ import annotations

import hashlib
import hmac
import statistics
import time

import pytest

from hived.core.auth import (
    ROLE_RANK,
    TokenTable,
    hash_secret,
    may_open,
    may_post_hooks,
    new_secret,
    origin_allowed,
    parse_bearer,
    role_at_least,
)
from hived.core.config import Name, Sha256, TokenConfig

ALICE_SECRET = "alice-secret-0123456789abcdef0123456789abcdef"
BOT_SECRET = "bot-secret-0123456789abcdef0123456789abcdef"


def token(name: str, role: str, secret: str) -> TokenConfig:
    return TokenConfig(name=Name(name), role=role, sha256=Sha256(hash_secret(secret)))  # type: ignore[arg-type]


TABLE = TokenTable([token("alice", "admin", ALICE_SECRET), token("bot", "agent", BOT_SECRET)])


def test_new_secrets_are_long_urlsafe_and_different() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert len(secret) >= 43  # 32 bytes in base64
        assert set(secret) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_hash_secret_is_sha256_hex_of_the_utf8_bytes() -> None:
    assert hash_secret("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert len(hash_secret("x")) == 64


def test_lookup_finds_the_token_of_a_right_secret() -> None:
    found = TABLE.lookup(ALICE_SECRET)
    assert found is not None
    assert (found.name, found.role) == ("alice", "admin")
    bot = TABLE.lookup(BOT_SECRET)
    assert bot is not None
    assert bot.name == "bot"


@pytest.mark.parametrize(
    "secret",
    [
        "wrong",
        ALICE_SECRET + "x",
        ALICE_SECRET[:-1],
        ALICE_SECRET.upper(),
        hash_secret(ALICE_SECRET),
    ],
)
def test_lookup_refuses_a_wrong_secret(secret: str) -> None:
    assert TABLE.lookup(secret) is None


def test_lookup_refuses_the_empty_secret_even_if_its_hash_is_configured() -> None:
    table = TokenTable([token("empty", "admin", "")])
    assert table.lookup("") is None


def test_lookup_of_an_empty_table_finds_nothing() -> None:
    assert TokenTable([]).lookup(ALICE_SECRET) is None


def test_lookup_accepts_an_upper_case_configured_hash() -> None:
    upper = TokenConfig(name=Name("u"), role="viewer", sha256=Sha256(hash_secret("s").upper()))
    assert TokenTable([upper]).lookup("s") == upper


@pytest.mark.parametrize(
    "secret",
    [
        ALICE_SECRET,  # the first entry: no early exit after it
        BOT_SECRET,  # the last
        "w",
        "wrong" * 20_000,  # 100 kB
        ALICE_SECRET[:-1],  # all but its last character
        hash_secret(ALICE_SECRET),  # the stored hash itself, presented as a secret
        "\u00e9\u20ac\U0001f600" * 100,
    ],
    ids=["first", "last", "short", "long", "prefix", "the-hash", "non-ascii"],
)
def test_lookup_compares_equal_length_digests_with_compare_digest_whatever_the_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    """Constant time, as far as the secret goes: the presented secret is never compared
    itself; its SHA-256 (64 hex digits, whatever its length or content) is compared to every
    configured hash, all of them whether one matched or not, by hmac.compare_digest, whose time
    depends only on the (equal) lengths. A ``==`` in its place, or a compare of the raw
    secret, or an early exit, fails here."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spying(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spying)
    found = TABLE.lookup(secret)
    digest = hashlib.sha256(secret.encode()).hexdigest().encode()
    assert calls == [(digest, t.sha256.encode()) for t in TABLE.tokens]
    assert all(isinstance(a, bytes) and len(a) == len(b) == 64 for a, b in calls)
    expected = {ALICE_SECRET: "alice", BOT_SECRET: "bot"}.get(secret)
    assert (found.name if found else None) == expected


def test_lookup_takes_as_long_for_a_near_miss_as_for_a_far_one() -> None:
    """A statistical check on top of the one above: a secret whose hash shares its first 4 hex
    digits with alice's takes as long to refuse as one that shares none, and as the right one
    to find. Medians of interleaved rounds, with a generous bound: what it can catch is a
    comparison whose time depends on the secret's bytes by far more than the noise."""
    target = hash_secret(ALICE_SECRET)
    near = next(
        c for c in (f"near-{i}" for i in range(1_000_000)) if hash_secret(c)[:4] == target[:4]
    )
    far = next(c for c in (f"far-{i}" for i in range(1_000_000)) if hash_secret(c)[0] != target[0])
    rounds: dict[str, list[float]] = {"right": [], "near": [], "far": []}
    secrets = {"right": ALICE_SECRET, "near": near, "far": far}
    for _ in range(300):
        for name, secret in secrets.items():
            start = time.perf_counter_ns()
            for _ in range(50):
                TABLE.lookup(secret)
            rounds[name].append(time.perf_counter_ns() - start)
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    assert max(medians.values()) < 1.5 * min(medians.values()), medians


def test_names_lists_the_configured_token_names() -> None:
    assert TABLE.names == {"alice", "bot"}


def test_role_order_is_agent_viewer_operator_admin() -> None:
    assert sorted(ROLE_RANK, key=ROLE_RANK.__getitem__) == ["agent", "viewer", "operator", "admin"]
    assert role_at_least("admin", "operator")
    assert role_at_least("operator", "operator")
    assert role_at_least("viewer", "agent")
    assert not role_at_least("viewer", "operator")
    assert not role_at_least("agent", "viewer")


def test_unknown_roles_rank_below_everything_and_require_too_much() -> None:
    assert not role_at_least("root", "agent")
    assert not role_at_least("admin", "root")


@pytest.mark.parametrize(
    ("channel", "role", "allowed"),
    [
        ("/v1/ws", "viewer", True),
        ("/v1/ws", "operator", True),
        ("/v1/ws", "admin", True),
        ("/v1/ws", "agent", False),
        ("/v1/admin", "admin", True),
        ("/v1/admin", "operator", False),
        ("/v1/admin", "viewer", False),
        ("/v1/admin", "agent", False),
        ("/v1/other", "admin", False),
    ],
)
def test_channels_have_their_own_role_floor(channel: str, role: str, allowed: bool) -> None:
    assert may_open(channel, role) is allowed


@pytest.mark.parametrize("role", ["agent", "viewer", "operator", "admin"])
def test_any_role_may_post_hooks(role: str) -> None:
    assert may_post_hooks(role)


def test_an_unknown_role_may_not_post_hooks() -> None:
    assert not may_post_hooks("nobody")


@pytest.mark.parametrize(
    ("header", "secret"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("  Bearer   abc-_.~+/=  ", "abc-_.~+/="),
        ("Bearer\tabc", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic YWxpY2U6eA==", None),
        ("Bearer abc def", None),
        ("abc", None),
    ],
)
def test_parse_bearer(header: str | None, secret: str | None) -> None:
    assert parse_bearer(header) == secret


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://127.0.0.1:7420", "127.0.0.1:7420", "http"),
        ("http://127.0.0.1:7420", "127.0.0.1:7420", "ws"),
        ("https://hive.example:8443", "hive.example:8443", "wss"),
        ("HTTP://Hive.Example:7420", "hive.example:7420", "http"),
        ("http://hive.example", "hive.example:80", "http"),
        ("http://hive.example:80", "hive.example", "ws"),
        ("https://hive.example", "hive.example:443", "https"),
        ("https://hive.example:443", "hive.example", "wss"),
        ("http://[::1]:7420", "[::1]:7420", "http"),
    ],
)
def test_same_origin_is_allowed(origin: str, host: str, scheme: str) -> None:
    assert origin_allowed(origin, host, scheme, [])


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("https://hive.example:7420", "hive.example:7420", "http"),  # other scheme family
        ("http://hive.example:7420", "hive.example:7420", "wss"),
        ("http://hive.example:7421", "hive.example:7420", "http"),  # other port
        ("http://hive.example", "hive.example:7420", "http"),  # default port 80 is not 7420
        ("https://hive.example:80", "hive.example", "ws"),
        ("http://evil.example:7420", "hive.example:7420", "http"),  # other host
        ("http://127.0.0.1:7420", None, "http"),  # no Host header to compare with
        ("null", "127.0.0.1:7420", "http"),  # sandboxed or file:// pages
        ("file://", "127.0.0.1:7420", "http"),
        ("http://127.0.0.1:7420/path", "127.0.0.1:7420", "http"),
        ("http://user@127.0.0.1:7420", "127.0.0.1:7420", "http"),
        ("http://127.0.0.1:99999", "127.0.0.1:99999", "http"),
    ],
)
def test_a_foreign_or_malformed_origin_is_refused_when_not_listed(
    origin: str, host: str | None, scheme: str
) -> None:
    assert not origin_allowed(origin, host, scheme, [])


def test_no_origin_is_allowed() -> None:
    assert origin_allowed(None, "hive.example:7420", "http", [])
    assert origin_allowed(None, None, "https", [])


def test_a_listed_origin_is_allowed() -> None:
    listed = ["https://dash.example", "http://localhost:5173"]
    assert origin_allowed("https://dash.example", "hive.example:7420", "http", listed)
    assert origin_allowed("http://localhost:5173", "hive.example:7420", "http", listed)


def test_a_listed_origin_matches_with_default_ports_and_case_normalized() -> None:
    listed = ["https://dash.example", "http://Localhost:5173/"]
    assert origin_allowed("https://dash.example:443", "hive.example:7420", "http", listed)
    assert origin_allowed("http://localhost:5173", "hive.example:7420", "http", listed)


def test_an_unlisted_origin_is_refused() -> None:
    listed = ["https://dash.example"]
    assert not origin_allowed("https://evil.example", "hive.example:7420", "http", listed)
    assert not origin_allowed("http://dash.example", "hive.example:7420", "http", listed)
    assert not origin_allowed("https://dash.example:8443", "hive.example:7420", "http", listed)
