"""One Redis pub/sub connection per gateway process, shared by all its sockets and streams.

A socket or stream ``listen``s on a channel and gets a queue; the hub subscribes to the
channel while at least one listener wants it. Whichever process consumed a Kafka record
publishes it on the channel, so it reaches the process that holds the socket. The reader
runs under a ``Supervisor``: if it dies it is logged and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.supervise import Supervisor

log = logging.getLogger("gateway.hub")
QUEUE_LIMIT = 1000


class Hub:
    """Channel fan-out from Redis pub/sub to local queues."""

    def __init__(self, redis: Redis, hello_channel: str) -> None:
        self.redis = redis
        self.hello = hello_channel
        self._pubsub: PubSub | None = None
        self._queues: dict[str, set[asyncio.Queue[str]]] = {}
        self.reader = Supervisor("gateway-hub", self._read)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        # Subscribing once now opens the connection the reader waits on.
        await self._pubsub.subscribe(self.hello)
        self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def publish(self, items: list[tuple[str, str]]) -> None:
        """Publish (channel, text) pairs in one round trip."""
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for channel, text in items:
            pipe.publish(channel, text)
        await pipe.execute()

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue of the channel's messages while the block runs (subscribed on entry)."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        async with self._lock:
            first = channel not in self._queues
            self._queues.setdefault(channel, set()).add(queue)
            if first and self._pubsub is not None:
                await self._pubsub.subscribe(channel)
        try:
            yield queue
        finally:
            async with self._lock:
                queues = self._queues.get(channel, set())
                queues.discard(queue)
                if not queues:
                    self._queues.pop(channel, None)
                    if self._pubsub is not None:
                        await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, OSError) as e:
                log.warning("pub/sub connection lost (%s); retrying", e)
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            self._deliver(str(msg["channel"]), str(msg["data"]))

    def _deliver(self, channel: str, data: str) -> None:
        for queue in self._queues.get(channel, ()):
            if queue.full():
                log.warning("a listener on %s is not keeping up; dropping a message", channel)
                continue
            queue.put_nowait(data)
