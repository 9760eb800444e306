"""Batches of Redis commands, one pipeline per node, in flight together: on one Redis or on a
Redis Cluster.

Each command of a batch is placed on the pipeline of the node that owns its key (``on(key)``),
so a batch costs one round trip per node, all at once, whatever its size. Scripts run by
``EVALSHA`` on the node of their first key (every script here touches one slot); each node
loads a script once, and a node that forgot its scripts (restarted, or a replica promoted,
since Redis does not replicate its script cache) gets them again before the batch is retried.

**Writes that must survive a failover.** Replication in Redis is asynchronous: a primary that
acknowledged a hold and died before its replica received it takes the hold with it, and the
promoted replica would let another request take the worker. A batch executed with
``replicated=True`` ends each node's pipeline with ``WAIT 1 <timeout>``, so its replies come
back only once the node's replica has the writes. The dispatcher announces nothing (no offer,
no assignment, no outbox published) before its writes are replicated this way. A node whose
replica does not confirm in time fails the batch, which is retried and never announced: a
primary without a live replica (after a failover, until the old primary rejoins as its
replica) pauses the writes of its slots rather than keep a single copy, and an old primary that
restarted and still believes it owns its slots (a client may briefly route to it) cannot have
its writes, which the cluster discards when it turns it into a replica, announced.

A reply that says the cluster moved (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``) or a
node that cannot be reached refreshes the slot map and fails the batch as ``StoreUnavailable``:
the consumer loop retries it with backoff, and the retry goes to the new owner of each slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Connection, ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra import metrics

log = logging.getLogger("infra.redis")

AnyRedis = Redis | RedisCluster
# One deadline per round trip rather than redis-py's per-reply socket timeout, which wraps each
# of a pipeline's replies in a timer of its own and cost about 40 % of a command's client time.
ROUND_TRIP_TIMEOUT_S = 5.0
# How long a replicated batch waits for each node's replica before it goes on without it.
WAIT_TIMEOUT_MS = 500
# Replies that say Redis cannot serve now, not that a command is wrong: the batch is retried
# whole, never blamed on one request.
BUSY_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY")
_MOVED = (MovedError, AskError, TryAgainError, ClusterDownError, NoScriptError)


class PackedConnection(Connection):
    """A connection that packs commands with hiredis's C packer: about 1 µs a command against
    8 µs for redis-py's own (the same bytes), the largest client cost of a batch."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # 'CONFIG GET': words sent apart
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class StoreUnavailable(RedisConnectionError):
    """Redis answered that it cannot serve now (out of memory, read-only, loading, moved...)."""


def transient(error: BaseException) -> bool:
    """Whether a command's error says Redis cannot serve now rather than that it is wrong."""
    if isinstance(error, _MOVED):
        return True
    return isinstance(error, ResponseError) and str(error).startswith(BUSY_REPLIES)


class Nodes:
    """The nodes behind one client: where each key lives, a client per node, and which
    scripts each node has loaded."""

    replicas = 0  # replicas a replicated batch waits for on each node

    def __init__(self) -> None:
        self.loaded: dict[str, set[str]] = {}  # node -> shas it has loaded

    def node_for(self, key: str) -> tuple[str, Redis]:
        raise NotImplementedError

    async def ready(self) -> None:
        """Know the nodes before the first batch is placed."""

    async def refresh(self) -> None:
        """Learn the slot map again (after a failover or a move)."""

    async def batch(self) -> Batch:
        """A new batch (the node map known first)."""
        await self.ready()
        return Batch(self)

    async def load(self, node: str, client: Redis, scripts: Sequence[AsyncScript]) -> None:
        have = self.loaded.setdefault(node, set())
        for script in scripts:
            if script.sha not in have:
                sha = await client.script_load(script.script)
                have.add(str(sha))

    def forget_scripts(self, node: str) -> None:
        self.loaded.pop(node, None)


class SingleNode(Nodes):
    """One Redis: every key on the one node, no replica to wait for."""

    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self.redis = redis

    def node_for(self, key: str) -> tuple[str, Redis]:
        return "", self.redis


class ClusterNodes(Nodes):
    """A Redis Cluster: keys placed by slot on the primaries, a plain client per primary."""

    replicas = 1

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__()
        self.cluster = cluster
        self.clients: dict[str, Redis] = {}
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Lock | None = None

    async def ready(self) -> None:
        if not self._refreshed_at:
            await self.refresh()

    async def refresh(self) -> None:
        lock = self._refreshing = self._refreshing or asyncio.Lock()
        began = time.monotonic()
        async with lock:
            if self._refreshed_at > began:  # another batch refreshed while this one waited
                return
            if self._refreshed_at:
                await self.cluster.nodes_manager.initialize()
            else:
                await self.cluster.initialize()
            self._refreshed_at = time.monotonic()
        log.info("Redis Cluster slot map refreshed: primaries %s", self.primaries())

    def primaries(self) -> list[str]:
        return sorted(n.name for n in self.cluster.get_primaries())

    def node_for(self, key: str) -> tuple[str, Redis]:
        node = self.cluster.get_node_from_key(key)
        if node is None:  # a slot without a primary: the cluster is failing over
            raise StoreUnavailable(f"no Redis Cluster node serves {key!r} now")
        client = self.clients.get(node.name)
        if client is None:
            pool = ConnectionPool(
                host=node.host, port=int(node.port), **_node_options(self.cluster)
            )
            client = self.clients[node.name] = Redis.from_pool(pool)  # closes the pool with it
        return node.name, client

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()


def _node_options(cluster: RedisCluster) -> dict[str, Any]:
    kwargs = cluster.get_connection_kwargs()
    keep = ("decode_responses", "socket_connect_timeout", "socket_keepalive", "password")
    return {k: kwargs[k] for k in keep if k in kwargs} | {
        "socket_timeout": None,
        "connection_class": PackedConnection,
    }


_NODES: weakref.WeakKeyDictionary[Any, Nodes] = weakref.WeakKeyDictionary()


def nodes_of(redis: AnyRedis) -> Nodes:
    """The node map of a client, shared by every adapter that uses the client."""
    found = _NODES.get(redis)
    if found is None:
        found = ClusterNodes(redis) if isinstance(redis, RedisCluster) else SingleNode(redis)
        _NODES[redis] = found
    return found


class Batch:
    """Commands placed by key, executed as one pipeline per node, all in flight together."""

    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes
        self.pipes: dict[str, tuple[Redis, Pipeline]] = {}
        self.where: list[tuple[str, int]] = []  # per command: its node and place there
        self.scripts: dict[str, dict[str, AsyncScript]] = {}

    def __len__(self) -> int:
        return len(self.where)

    def on(self, key: str) -> Pipeline:
        """The pipeline of ``key``'s node: add exactly one command for ``key`` to it."""
        name, client = self.nodes.node_for(key)
        found = self.pipes.get(name)
        if found is None:
            found = self.pipes[name] = (client, client.pipeline(transaction=False))
        pipe = found[1]
        self.where.append((name, len(pipe.command_stack)))
        return pipe

    def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Run ``script`` on its keys' node (``keys`` share a slot)."""
        pipe = self.on(keys[0])
        self.scripts.setdefault(self.where[-1][0], {})[script.sha] = script
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self, *, raise_on_error: bool = True, replicated: bool = False) -> list[Any]:
        """Every command's reply, in the order placed. Without ``raise_on_error`` a command's
        error is its reply and the others stand. ``replicated``: see the module's docstring."""
        if not self.where:
            return []
        names = list(self.pipes)
        try:
            async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
                replies = await asyncio.gather(
                    *(self._node(n, replicated and self.nodes.replicas > 0) for n in names),
                    return_exceptions=True,
                )
        except TimeoutError as e:
            raise RedisTimeoutError(f"no reply from Redis within {ROUND_TRIP_TIMEOUT_S} s") from e
        by_node = dict(zip(names, replies, strict=True))
        await self._fail_if_unavailable(by_node)
        out = [by_node[name][at] for name, at in self.where]  # type: ignore[index]
        if raise_on_error:
            for reply in out:
                if isinstance(reply, Exception):
                    raise reply
        return out

    async def _node(self, name: str, wait: bool) -> list[Any]:
        client, pipe = self.pipes[name]
        await self.nodes.load(name, client, list(self.scripts.get(name, {}).values()))
        if wait:
            pipe.execute_command("WAIT", self.nodes.replicas, WAIT_TIMEOUT_MS)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if wait:
            acked = replies.pop()
            if not (isinstance(acked, int) and acked >= self.nodes.replicas):
                metrics.REDIS_UNREPLICATED.inc()
                raise StoreUnavailable(
                    f"{name}: no replica confirmed the writes within {WAIT_TIMEOUT_MS} ms ({acked})"
                )
        return replies

    async def _fail_if_unavailable(self, by_node: dict[str, Any]) -> None:
        """Raise ``StoreUnavailable`` (after refreshing the map) if a node could not serve."""
        for name, replies in by_node.items():
            if isinstance(replies, BaseException):
                if not isinstance(replies, Exception):
                    raise replies
                await self._moved(name, replies)
                raise replies
            for reply in replies:
                if isinstance(reply, Exception) and transient(reply):
                    await self._moved(name, reply)
                    raise StoreUnavailable(f"{name or 'Redis'}: {reply}") from reply

    async def _moved(self, name: str, error: Exception) -> None:
        if isinstance(error, NoScriptError | RedisConnectionError | OSError):
            self.nodes.forget_scripts(name)
        if isinstance(error, (*_MOVED, RedisConnectionError, OSError)):
            try:
                await self.nodes.refresh()
            except RedisError as e:  # the cluster is still electing: the retry refreshes again
                log.info("refreshing the Redis Cluster map failed: %s", e)
