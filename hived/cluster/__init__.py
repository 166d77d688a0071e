"""Many machines, one view: hived nodes sharing a Redis Streams engine (DESIGN §13).

Each node keeps its SQLite store as the source of truth and mirrors its topics into the engine
(:mod:`~hived.cluster.mirror`); a client on any node sees every node's sessions, follows any
session from the engine (:mod:`~hived.cluster.follow`) and acts on it through the owning node's
command stream (:mod:`~hived.cluster.commands`); heart-beats tell which nodes are alive
(:mod:`~hived.cluster.node`). Without ``[cluster]`` in the config none of this is imported.

The sans-IO parts (key names, the mirror script and its answers, command envelopes, liveness,
the merged sessions view) are plain synchronous modules — :mod:`~hived.cluster.keys`,
:mod:`~hived.cluster.envelope`, :mod:`~hived.cluster.liveness`, :mod:`~hived.cluster.view` —
that import neither trio nor coredis; the I/O around them is :mod:`~hived.cluster.engine` and
the tasks that use it. docs/cluster.md is the operator's page.
"""
