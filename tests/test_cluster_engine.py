"""The mirror, the follower and the command stream against a real redis-server.

Each test starts its own ``redis-server`` on a free loopback port (the ``redis`` fixture; the
test skips, saying so, without the binary) and drives hived's cluster parts with a hub over an
in-memory history. Waits poll a condition under a deadline.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import trio
import trustme

from hived.cluster.commands import Commands
from hived.cluster.engine import ENGINE_ERRORS, Engine, open_engine
from hived.cluster.follow import RemoteTopic
from hived.cluster.keys import MIRROR_SCRIPT, Keys, MirrorAnswer, Mode, Status, mirror_args
from hived.cluster.mirror import Mirror, Tap
from hived.core.config import ClusterConfig
from hived.core.errors import RequestError
from hived.core.messages import SessionStop
from hived.core.protocol import Caller, Request
from hived.history import MemoryHistory
from hived.hub import Hub, Subscriber
from tests.e2e.harness import free_port, until
from tests.redis_engine import EngineLink, RedisServer, needs_redis

# coredis 6.9 leaves the anyio memory streams of a connection the engine dropped for the
# garbage collector (ResourceWarning "Unclosed MemoryObject…Stream"); the tests that stop the
# engine see it. Only that warning is let through, and only here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def _collect_dropped_connections() -> Iterator[None]:
    """Collect those streams before the next test, under this module's filter."""
    yield
    gc.collect()


DEADLINE_S: Final = 10.0
TOPIC: Final = "session/01JTEST"
KEYS: Final = Keys("t")


def cluster_config(redis: RedisServer, node: str = "a") -> ClusterConfig:
    return ClusterConfig(node=node, url=redis.url)


async def stream_seqs(engine: Engine, topic: str = TOPIC) -> list[int]:
    entries = await engine.xrange(KEYS.stream(topic, "a"))
    return [int(str(e.identifier).split("-")[0]) for e in entries]


async def test_the_script_takes_only_top_plus_one(redis: RedisServer) -> None:
    async with open_engine(cluster_config(redis)) as engine:
        script = engine.register_script(MIRROR_SCRIPT)
        keys = [KEYS.stream(TOPIC, "a"), KEYS.meta(TOPIC, "a")]

        async def send(start_ok: bool, *seqs: int, mode: Mode = Mode.STRICT) -> MirrorAnswer:
            pairs = [(seq, f"frame {seq}") for seq in seqs]
            args = mirror_args("a", 11, mode, start_ok, 0, pairs)
            return MirrorAnswer.parse(await script(keys=keys, args=args))

        assert await send(False, 1) == MirrorAnswer(Status.GAP, -1, 0), "new: only from the start"
        assert await send(True, 1, 2, 3) == MirrorAnswer(Status.OK, 3, 11)
        assert await send(False, 2, 3) == MirrorAnswer(Status.DUPLICATE, 3, 11)
        assert await send(False, 5) == MirrorAnswer(Status.GAP, 3, 11)
        assert await send(False, 3, 4, 6) == MirrorAnswer(Status.GAP, 4, 11)
        assert await stream_seqs(engine) == [1, 2, 3, 4]
        assert await send(False, 9, mode=Mode.MONOTONIC) == MirrorAnswer(Status.OK, 9, 11)


async def test_the_mirror_copies_in_order_and_catches_up_after_the_engine_was_down(
    redis: RedisServer,
) -> None:
    history = MemoryHistory()
    mirror: Mirror | None = None
    tap = Tap(history, lambda event: mirror.recorded(event) if mirror else None)
    hub = Hub(history=tap)
    async with open_engine(cluster_config(redis)) as engine, trio.open_nursery() as nursery:
        mirror = Mirror(engine, KEYS, "a", history, hub.last_seq)
        await nursery.start(mirror.serve)
        for n in range(5):
            hub.publish(TOPIC, "text", {"line": f"{n}"})
        await until("5 events mirrored", lambda: _has(engine, list(range(1, 6))))

        await redis.stop()
        for n in range(5, 300):
            hub.publish(TOPIC, "text", {"line": f"{n}"})  # never waits for the engine
        await redis.start()  # empty: it kept nothing
        await until("the whole topic again", lambda: _has(engine, list(range(1, 301))))
        entries = await engine.xrange(KEYS.stream(TOPIC, "a"))
        lines = [orjson.loads(str(e.field_values["f"]))["data"]["line"] for e in entries]
        assert lines == [f"{n}" for n in range(300)]
        nursery.cancel_scope.cancel()


async def test_a_stream_ahead_of_the_store_is_made_again_with_a_new_epoch(
    redis: RedisServer,
) -> None:
    async with open_engine(cluster_config(redis)) as engine:
        script = engine.register_script(MIRROR_SCRIPT)
        keys = [KEYS.stream(TOPIC, "a"), KEYS.meta(TOPIC, "a")]
        old = [(seq, f"old {seq}") for seq in range(1, 6)]
        await script(keys=keys, args=mirror_args("a", 99, Mode.STRICT, True, 0, old))

        history = MemoryHistory()  # the node lost seqs 4 and 5 in a crash, and gives 4 again
        hub = Hub(history=history)
        for n in range(4):
            hub.publish(TOPIC, "text", {"line": f"new {n}"})
        mirror = Mirror(engine, KEYS, "a", history, hub.last_seq)
        mirror.mark(TOPIC)
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.serve)
            await until("the stream made again", lambda: _has(engine, [1, 2, 3, 4]))
            nursery.cancel_scope.cancel()
        epoch = await engine.hget(KEYS.meta(TOPIC, "a"), "epoch")
        assert epoch not in (None, "99")
        entries = await engine.xrange(KEYS.stream(TOPIC, "a"))
        assert orjson.loads(str(entries[-1].field_values["f"]))["data"]["line"] == "new 3"


async def _has(engine: Engine, seqs: list[int]) -> bool:
    return await stream_seqs(engine) == seqs


async def test_followers_replay_then_go_live_with_one_read_and_a_trimmed_start_filled(
    redis: RedisServer,
) -> None:
    async with open_engine(cluster_config(redis)) as engine:
        script = engine.register_script(MIRROR_SCRIPT)
        keys = [KEYS.stream(TOPIC, "b"), KEYS.meta(TOPIC, "b")]

        async def mirror(start_ok: bool, seqs: range) -> None:
            pairs = [(seq, _frame(seq)) for seq in seqs]
            await script(keys=keys, args=mirror_args("b", 7, Mode.STRICT, start_ok, 0, pairs))

        await mirror(True, range(6, 11))  # the engine keeps 6..10; 1..5 come from the owner
        asked: list[tuple[int, int]] = []

        async def fill(after: int, upto: int) -> list[tuple[int, str]]:
            asked.append((after, upto))
            return [(seq, _frame(seq)) for seq in range(after + 1, upto + 1)]

        reader = Hub()
        early, late = reader.subscriber(100), reader.subscriber(100)
        remote = RemoteTopic(engine, keys[0], reader, fill, cursor=10)
        await remote.join(early, 2)
        assert remote.members == {early: 10}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(remote.serve)
            await mirror(False, range(11, 13))
            got_early = await _seqs_until(early, 12)
            await remote.join(late, 11)
            await mirror(False, range(13, 14))
            got_late = await _seqs_until(late, 13)
            got_early += await _seqs_until(early, 13)
            remote.leave(early)
            remote.leave(late)
        assert got_early == list(range(3, 14)), "no gap, no duplicate at either seam"
        assert got_late == [12, 13]
        assert asked == [(2, 5)]


async def _seqs_until(sub: Subscriber, last: int) -> list[int]:
    seqs: list[int] = []
    with trio.fail_after(DEADLINE_S):
        while not seqs or seqs[-1] < last:
            seqs += [orjson.loads(f)["seq"] for f in await sub.receive_batch()]
    return seqs


def _frame(seq: int) -> str:
    return orjson.dumps({"type": "event", "topic": TOPIC, "seq": seq, "kind": "text"}).decode()


async def test_a_command_runs_on_its_node_and_the_answer_comes_back(redis: RedisServer) -> None:
    ran: list[tuple[str, str]] = []

    async def run(request: Request, caller: Caller) -> Any:
        ran.append((request.type, caller.token_name))
        if getattr(request, "session", None) == "missing":
            raise RequestError("not_found", "no session 'missing'")
        return {"session": getattr(request, "session", None)}

    async def never(request: Request, caller: Caller) -> Any:
        raise AssertionError("node a runs nothing here")

    async with (
        open_engine(cluster_config(redis, "a")) as engine_a,
        open_engine(cluster_config(redis, "b")) as engine_b,
        trio.open_nursery() as nursery,
    ):
        on_a = Commands(engine_a, KEYS, "a", 5.0, never)
        on_b = Commands(engine_b, KEYS, "b", 5.0, run)
        await nursery.start(on_b.serve)
        operator = Caller(3, "alice", "operator")
        assert await on_a.ask("b", SessionStop(session="S1"), operator) == {"session": "S1"}
        with pytest.raises(RequestError) as missing:
            await on_a.ask("b", SessionStop(session="missing"), operator)
        assert missing.value.code == "not_found"
        with pytest.raises(RequestError) as refused:
            await on_a.ask("b", SessionStop(session="S1"), Caller(3, "bob", "viewer"))
        assert refused.value.code == "forbidden", "the owner checks the role again"
        assert ran == [("session.stop", "alice@a"), ("session.stop", "alice@a")]

        async def all_acknowledged() -> bool:
            pending = await engine_b.xpending(KEYS.commands("b"), "hived")
            return pending.pending == 0

        await until("every command acknowledged", all_acknowledged)
        nursery.cancel_scope.cancel()


async def test_a_request_to_a_silent_node_times_out_with_a_clear_error(
    redis: RedisServer,
) -> None:
    async def never(request: Request, caller: Caller) -> Any:
        raise AssertionError("nobody runs it")

    async with open_engine(cluster_config(redis)) as engine:
        commands = Commands(engine, KEYS, "a", 0.5, never)
        with pytest.raises(RequestError) as late:
            await commands.ask("c", SessionStop(session="S1"), Caller(1, "alice", "operator"))
        assert late.value.code == "internal"
        assert "node c did not answer within cluster.request_timeout_s=0.5" in late.value.message


async def test_the_command_reader_reads_again_after_its_link_to_the_engine_was_cut(
    redis: RedisServer,
) -> None:
    async def run(request: Request, caller: Caller) -> Any:
        return {"session": getattr(request, "session", None)}

    link = EngineLink(redis.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.serve)
        async with (
            open_engine(cluster_config(redis, "a")) as engine_a,
            open_engine(ClusterConfig(node="b", url=link.url)) as engine_b,
        ):
            on_a = Commands(engine_a, KEYS, "a", 5.0, run)
            on_b = Commands(engine_b, KEYS, "b", 5.0, run)
            nursery.start_soon(on_b.serve)
            operator = Caller(3, "alice", "operator")
            assert await on_a.ask("b", SessionStop(session="S1"), operator) == {"session": "S1"}
            link.cut()  # b's reader fails; its group stays in the engine
            hasty = Commands(engine_a, KEYS, "a", 0.3, run)
            with pytest.raises(RequestError, match="node b did not answer"):
                await hasty.ask("b", SessionStop(session="cut"), operator)
            link.restore()
            assert await on_a.ask("b", SessionStop(session="S2"), operator) == {"session": "S2"}
            nursery.cancel_scope.cancel()


@needs_redis
async def test_the_engine_is_reached_over_tls_with_the_password_from_its_file(
    tmp_path: Path,
) -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "engine.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    stranger.cert_pem.write_to_path(tmp_path / "stranger.pem")
    (tmp_path / "engine.pass").write_text("s3cret words\n")
    tls_port = free_port()
    engine_pem = str(tmp_path / "engine.pem")
    server = RedisServer(
        free_port(),
        tmp_path,
        extra=(
            "--tls-port", str(tls_port),
            "--tls-cert-file", engine_pem,
            "--tls-key-file", engine_pem,
            "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
            "--tls-auth-clients", "no",
            "--requirepass", "s3cret words",
        ),
    )  # fmt: skip
    await server.start()
    try:

        def config(ca_file: str, password_file: str | None = "engine.pass") -> ClusterConfig:
            return ClusterConfig(
                node="a",
                url=f"rediss://127.0.0.1:{tls_port}",
                password_file=str(tmp_path / password_file) if password_file else None,
                tls_ca=str(tmp_path / ca_file),
            )

        async with open_engine(config("ca.pem")) as engine:
            await engine.set("t:probe", "over tls")
            assert await engine.get("t:probe") == "over tls"
        async with open_engine(config("stranger.pem")) as engine:
            with pytest.raises(ENGINE_ERRORS) as unsigned:
                await engine.get("t:probe")
            assert "CERTIFICATE_VERIFY_FAILED" in _causes(unsigned.value)
        async with open_engine(config("ca.pem", password_file=None)) as engine:
            with pytest.raises(ENGINE_ERRORS) as anonymous:
                await engine.get("t:probe")
            assert "AuthenticationRequiredError" in _causes(anonymous.value)
    finally:
        await server.stop()


def _causes(exc: BaseException | None) -> str:
    """What ``exc`` says, and what every exception it came from says."""
    said = []
    while exc is not None:
        said.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(said)


async def test_a_stream_is_trimmed_to_what_the_store_keeps(redis: RedisServer) -> None:
    history = MemoryHistory(keep=40)
    mirror: Mirror | None = None
    tap = Tap(history, lambda event: mirror.recorded(event) if mirror else None)
    hub = Hub(history=tap)
    async with open_engine(cluster_config(redis)) as engine, trio.open_nursery() as nursery:
        mirror = Mirror(engine, KEYS, "a", history, hub.last_seq)
        await nursery.start(mirror.serve)
        for n in range(1, 201):
            hub.publish(TOPIC, "text", {"line": f"{n}"})
            if n % 20 == 0:  # the mirror keeps up, so it never has to make the stream again
                await until(f"seq {n} mirrored", lambda n=n: _top_is(engine, n))
        seqs = await stream_seqs(engine)
        oldest = history.oldest_seq(TOPIC)
        assert oldest is not None
        assert oldest > 1, "the store forgot the oldest events"
        assert seqs == list(range(oldest, 201)), "the stream keeps what the store keeps"
        nursery.cancel_scope.cancel()


async def _top_is(engine: Engine, seq: int) -> bool:
    return await engine.hget(KEYS.meta(TOPIC, "a"), "top") == str(seq)
