"""Operations: Prometheus metrics, each consumer's lag, and the ``/healthz``, ``/readyz`` and
``/metrics`` endpoints every service serves.

Every metric is named ``gig_*`` and lives in prometheus-client's process-wide registry; the
table of them is in docs/operations.md ("Metrics"). Labels stay bounded: a consumer's name,
a group, a topic and partition, a message type, an error's system (``redis``, ``kafka``…),
a dead letter's reason *kind* (never its text), a cache part.

- **Lag** is measured by each consumer on its own, every ``lag_interval_s``: the end offsets of
  its assigned partitions (one ``ListOffsets`` round trip) minus its positions there (local).
  The total goes into the service's ``Health``, which ``/readyz`` reads.
- **Batches**: ``timed`` wraps a consumer's handler, observing each non-empty batch's size and
  how long the handler took.
- **Endpoints**: ``serve_probes`` is a small asyncio HTTP server (GET only, one request per
  connection) for the consumers; the gateway serves the same answers on its own port.

This module imports nothing of the project but ``infra.health``, so every layer (the backoff,
the rebuild, the services) can count here without an import cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import socket
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from infra.health import Health
from infra.tasks import background

log = logging.getLogger("metrics")
R = TypeVar("R")

# --- the metrics -------------------------------------------------------------------------------

LAG = Gauge(
    "gig_consumer_lag",
    "Records between a consumer's position and the end of the log, per partition it owns",
    ["group", "topic", "partition"],
)
LAG_MEASURED = Gauge(
    "gig_consumer_lag_measured_seconds", "When the group's lag was last measured", ["group"]
)
BATCH_RECORDS = Histogram(
    "gig_batch_records",
    "Records per batch a consumer's handler took",
    ["consumer"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "gig_batch_seconds",
    "How long a consumer's handler took over one batch",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DECISIONS = Counter(
    "gig_decisions_total",
    "Messages the dispatcher decided and published (offers, withdrawals, request events)",
    ["type"],
)
OFFERS = Counter("gig_offers_total", "Offers made (OfferMade)")
ASSIGNMENTS = Counter("gig_assignments_total", "Workers assigned to requests (WorkerAssigned)")
FIRST_OFFER = Histogram(
    "gig_time_to_first_offer_seconds",
    "From a request's requested_at to its first offer",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
DEAD_LETTERS = Counter(
    "gig_dead_letters_total",
    "Dead letters sent, by the consumer that refused the record and the reason's kind",
    ["consumer", "reason"],
)
ERRORS = Counter(
    "gig_errors_total",
    "Failed calls that are waited out and retried, by the system that failed",
    ["system"],
)
RETRIES = Counter(
    "gig_retries_total", "Retries after a failed call, by the system that failed", ["system"]
)
RECOVERIES = Counter(
    "gig_recoveries_total", "Outages over: a failing call working again", ["system"]
)
REDIS_UNREPLICATED = Counter(
    "gig_redis_unreplicated_total",
    "Replicated Redis batches failed because a node's replica did not confirm in time",
)
REBUILDS = Counter("gig_cache_rebuilds_total", "Times this process found the Redis cache not whole")
REBUILD_PARTS = Counter(
    "gig_cache_rebuild_parts_total",
    "Parts of the cache this process rebuilt from the log",
    ["part"],
)
REBUILD_SECONDS = Histogram(
    "gig_cache_rebuild_seconds",
    "How long rebuilding one part of the cache took",
    ["part"],
    buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REBUILDING = Gauge(
    "gig_cache_rebuilding", "1 while this process waits for the cache to be whole again"
)

# --- errors and retries (counted in infra.backoff.Retrying) ------------------------------------

SYSTEMS = (("redis", "redis"), ("aiokafka", "kafka"), ("kafka", "kafka"), ("asyncpg", "postgres"))


def system_of(error: BaseException) -> str:
    """The system a failure came from, by the module of its type: ``redis``, ``kafka``,
    ``postgres``, ``network`` (an OS-level error) or ``other``."""
    module = type(error).__module__
    for prefix, system in SYSTEMS:
        if module == prefix or module.startswith(prefix + "."):
            return system
    return "network" if isinstance(error, OSError) else "other"


def failed(error: BaseException) -> str:
    """Count a failure about to be waited out; return its system."""
    system = system_of(error)
    ERRORS.labels(system).inc()
    return system


def retried(system: str) -> None:
    RETRIES.labels(system).inc()


def recovered(system: str) -> None:
    RECOVERIES.labels(system).inc()


# --- dead letters ------------------------------------------------------------------------------

DEAD_LETTER_TOPIC = "gig.dead-letters.v1"  # schemas.topics.DEAD_LETTERS (a unit test checks)
REASON_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("unknown_market", re.compile(r"^unknown market")),
    ("time", re.compile(r"in the future|s ahead")),
    ("refused", re.compile(r"^refused:")),
    ("undecodable", re.compile(r"^cannot be decoded|not valid JSON|Invalid JSON|EOF while")),
    ("handler_failed", re.compile(r"handler failed on it")),
    ("conflict", re.compile(r"^gave up after")),
    ("invalid", re.compile(r"^[\w.\[\]-]+: ")),
)


def reason_kind(reason: str) -> str:
    """A dead letter's reason as one of a few kinds, for a label (never the text itself)."""
    for kind, pattern in REASON_KINDS:
        if pattern.search(reason):
            return kind
    return "other"


class Outgoingish(Protocol):
    """An ``infra.publish.Outgoing`` (not imported: it imports the backoff, which counts here)."""

    @property
    def topic(self) -> str: ...
    @property
    def message(self) -> Any: ...


def dead_letters_sent(consumer: str, messages: Iterable[Outgoingish]) -> int:
    """Count the dead letters among messages about to be sent; return how many."""
    n = 0
    for m in messages:
        if m.topic == DEAD_LETTER_TOPIC:
            DEAD_LETTERS.labels(consumer, reason_kind(str(getattr(m.message, "reason", "")))).inc()
            n += 1
    return n


class Sink(Protocol):
    async def send(self, messages: Sequence[Any]) -> Awaitable[Any] | None: ...


@dataclass
class CountedSink:
    """A consumer's sink that counts the dead letters among what goes through it (what its
    handler sends, and what its loop dead-letters)."""

    sink: Sink
    consumer: str

    async def send(self, messages: Sequence[Any]) -> Awaitable[Any] | None:
        dead_letters_sent(self.consumer, messages)
        return await self.sink.send(messages)


# --- the dispatcher's decisions ----------------------------------------------------------------


def decided(messages: Iterable[Outgoingish]) -> tuple[int, int, int]:
    """Count a batch's decisions by type, its offers and assignments; return the three."""
    counts: dict[str, int] = {}
    for m in messages:
        if m.topic != DEAD_LETTER_TOPIC:
            kind = type(m.message).__name__
            counts[kind] = counts.get(kind, 0) + 1
    for kind, n in counts.items():
        DECISIONS.labels(kind).inc(n)
    offers, assigned = counts.get("OfferMade", 0), counts.get("WorkerAssigned", 0)
    OFFERS.inc(offers)
    ASSIGNMENTS.inc(assigned)
    return sum(counts.values()), offers, assigned


class HasOffers(Protocol):
    @property
    def offers(self) -> Sequence[Any]: ...
    @property
    def job(self) -> Any: ...


def first_offer_s(state: HasOffers, at_ms: int) -> float | None:
    """Seconds from the request to its first offer, if a decision made at ``at_ms`` made it
    (offers are kept in the order they were made)."""
    if not state.offers or state.offers[0].made_at_ms != at_ms:
        return None
    requested: int = state.job.requested_at_ms
    return max(0.0, (at_ms - requested) / 1000)


def first_offers(saved: Iterable[tuple[HasOffers, int]]) -> int:
    """Observe the time to first offer of each saved (state, decided at) that made one."""
    n = 0
    for state, at_ms in saved:
        seconds = first_offer_s(state, at_ms)
        if seconds is not None:
            FIRST_OFFER.observe(seconds)
            n += 1
    return n


# --- batches -----------------------------------------------------------------------------------


def timed(
    consumer: str, handler: Callable[[list[Any]], Awaitable[R]]
) -> Callable[[list[Any]], Awaitable[R]]:
    """The handler, observing each non-empty batch's size and the handler's time."""
    size, seconds = BATCH_RECORDS.labels(consumer), BATCH_SECONDS.labels(consumer)

    async def run(records: list[Any]) -> R:
        if not records:
            return await handler(records)
        began = time.perf_counter()
        result = await handler(records)
        seconds.observe(time.perf_counter() - began)
        size.observe(len(records))
        return result

    return run


@dataclass
class Throughput:
    """What a service did since its last throughput line, logged every ``every_s``."""

    name: str
    every_s: float = 30.0
    batches: int = 0
    records: int = 0
    decisions: int = 0
    offers: int = 0
    assignments: int = 0
    since: float = field(default_factory=time.monotonic)

    def add(self, records: int, decisions: int = 0, offers: int = 0, assignments: int = 0) -> None:
        self.batches += 1 if records else 0
        self.records += records
        self.decisions += decisions
        self.offers += offers
        self.assignments += assignments

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self.since >= self.every_s

    def line(self, lag: int | None, now: float | None = None) -> str:
        """The throughput line; resets the counts."""
        now = time.monotonic() if now is None else now
        span = max(now - self.since, 1e-9)
        text = (
            f"{self.name}: {self.batches} batches, {self.records} records "
            f"({self.records / span:.0f}/s), {self.decisions} decisions "
            f"({self.decisions / span:.0f}/s), {self.offers} offers, "
            f"{self.assignments} assignments in {span:.0f} s; lag {_lag_text(lag)}"
        )
        self.batches = self.records = self.decisions = self.offers = self.assignments = 0
        self.since = now
        return text

    def maybe_log(self, lag: int | None) -> None:
        if self.due():
            quiet = not self.records and not lag
            line = self.line(lag)
            if not quiet:
                log.info(line, extra={"service": self.name, "lag": lag})


def _lag_text(lag: int | None) -> str:
    return "not measured yet" if lag is None else f"{lag} records"


# --- lag ---------------------------------------------------------------------------------------

POSITION_TIMEOUT_S = 2.0


def lag_by_partition(
    ends: Mapping[TopicPartition, int], positions: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Records behind the end on each partition with both an end and a position."""
    return {tp: max(0, ends[tp] - at) for tp, at in positions.items() if tp in ends}


ENDS_TIMEOUT_S = 10.0


async def ends_and_positions(
    consumer: AIOKafkaConsumer,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """On each partition the consumer owns now: the end offset (one round trip) and its
    position (local; a partition with no position yet is left out)."""
    owned = list(consumer.assignment())
    if not owned:
        return {}, {}
    # Bounded: aiokafka retries a partition without a leader (a topic just made, a broker
    # away) until its request timeout, and a stale figure is better than a stuck watcher.
    ends = await asyncio.wait_for(consumer.end_offsets(owned), ENDS_TIMEOUT_S)
    positions: dict[TopicPartition, int] = {}
    for tp in owned:
        with contextlib.suppress(Exception):  # revoked meanwhile, or no position yet
            positions[tp] = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
    return ends, positions


async def measure_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """The consumer's lag on each partition it owns now."""
    return lag_by_partition(*await ends_and_positions(consumer))


@dataclass
class LagGauge:
    """The lag gauges of one group in this process: set anew each time, stale ones removed."""

    group: str
    shown: set[tuple[str, int]] = field(default_factory=set)

    def show(self, lag: Mapping[TopicPartition, int]) -> int:
        now = {(tp.topic, tp.partition) for tp in lag}
        for topic, part in self.shown - now:
            with contextlib.suppress(KeyError):
                LAG.remove(self.group, topic, str(part))
        for tp, n in lag.items():
            LAG.labels(self.group, tp.topic, str(tp.partition)).set(n)
        self.shown = now
        LAG_MEASURED.labels(self.group).set(time.time())
        return sum(lag.values())

    def clear(self) -> None:
        self.show({})
        with contextlib.suppress(KeyError):
            LAG_MEASURED.remove(self.group)


async def watch_lag(
    consumer: AIOKafkaConsumer,
    group: str,
    health: Health | None,
    stop: asyncio.Event,
    interval_s: float = 5.0,
) -> None:
    """Measure the consumer's lag now and every ``interval_s`` until ``stop`` (or cancelled):
    gauges per partition, the total in ``health``."""
    gauge = LagGauge(group)
    try:
        while not stop.is_set():
            try:
                total = gauge.show(await measure_lag(consumer))
                if health is not None:
                    health.measured(total)
            except Exception as e:  # the broker away: the loop says so; try again later
                log.debug("measuring the lag of %s failed: %s", group, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        gauge.clear()


@contextlib.asynccontextmanager
async def lag_watch(
    consumer: AIOKafkaConsumer,
    group: str,
    health: Health | None,
    stop: asyncio.Event,
    interval_s: float = 5.0,
) -> AsyncIterator[None]:
    """``watch_lag`` in the background for the block's duration."""
    async with background(watch_lag(consumer, group, health, stop, interval_s)):
        yield


# --- rebuilds (counted in infra.rebuild) -------------------------------------------------------

_waiting_for_cache = [0]  # guards of this process waiting for the cache to be whole


def cache_rebuilding() -> bool:
    """Whether this process waits for the cache to be whole again."""
    return _waiting_for_cache[0] > 0


@contextlib.contextmanager
def rebuilding() -> Iterator[None]:
    """While this process waits for the cache to be whole (counted once each time)."""
    REBUILDS.inc()
    REBUILDING.inc()
    _waiting_for_cache[0] += 1
    try:
        yield
    finally:
        _waiting_for_cache[0] -= 1
        REBUILDING.dec()


@contextlib.contextmanager
def rebuilding_part(part: str) -> Iterator[None]:
    """While this process rebuilds one part; counted and timed once it is done."""
    began = time.perf_counter()
    yield
    REBUILD_PARTS.labels(part).inc()
    REBUILD_SECONDS.labels(part).observe(time.perf_counter() - began)


# --- the endpoints -----------------------------------------------------------------------------


@dataclass
class Probe:
    """What ``/healthz`` and ``/readyz`` answer for one service."""

    health: Health
    max_lag: int = 10_000

    def alive(self) -> dict[str, Any]:
        return {"alive": True, **self.health.as_dict()}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready: joined its group, not degraded, the cache whole, lag measured and under the
        bound; the body says which of these fails."""
        h = self.health
        rebuilding_now = cache_rebuilding()
        ok = h.ready and not rebuilding_now and h.lag is not None and h.lag <= self.max_lag
        body = {
            "ready": ok,
            **h.as_dict(),
            "lag": h.lag,
            "max_lag": self.max_lag,
            "cache_rebuilding": rebuilding_now,
        }
        return ok, body


Answer = tuple[int, str, bytes]
JSON_TYPE = "application/json"


def metrics_text() -> tuple[str, bytes]:
    return CONTENT_TYPE_LATEST, generate_latest()


def respond(method: str, target: str, probe: Probe) -> Answer:
    """Status, content type and body for one request (pure but for the metrics' values)."""
    path = target.split("?", 1)[0]
    if path not in ("/healthz", "/readyz", "/metrics"):
        return 404, JSON_TYPE, b'{"detail":"not found: try /healthz, /readyz or /metrics"}'
    if method not in ("GET", "HEAD"):
        return 405, JSON_TYPE, b'{"detail":"GET only"}'
    if path == "/metrics":
        kind, body = metrics_text()
        return 200, kind, body
    if path == "/healthz":
        return 200, JSON_TYPE, json.dumps(probe.alive()).encode()
    ok, said = probe.ready()
    return (200 if ok else 503), JSON_TYPE, json.dumps(said).encode()


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           503: "Service Unavailable"}  # fmt: skip
READ_TIMEOUT_S = 5.0
MAX_HEADERS = 100


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: Probe
) -> None:
    try:
        first = (await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)).decode("latin-1")
        for _ in range(MAX_HEADERS):
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            if line in (b"\r\n", b"\n", b""):
                break
        parts = first.split()
        status, kind, body = (
            respond(parts[0], parts[1], probe) if len(parts) == 3 else (400, JSON_TYPE, b"{}")
        )
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + (b"" if parts[:1] == ["HEAD"] else body))
        await writer.drain()
    except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
        pass  # a client that went away or sent nonsense: nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class MetricsPortBusy(Exception):
    """The metrics port asked for on the command line is taken."""


def listen(
    host: str, port: int, *, strict: bool = False, what: str = "metrics"
) -> socket.socket | None:
    """A socket bound to ``host:port`` for the endpoints; None for port 0 (off). A taken port
    raises ``MetricsPortBusy`` when ``strict`` (asked for explicitly), else a free port is
    taken instead, with a warning naming it."""
    if port == 0:
        return None
    try:
        return _bound(host, port)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        if strict:
            raise MetricsPortBusy(
                f"{what} port {port} on {host} is in use: choose another with --metrics-port"
            ) from None
    sock = _bound(host, 0)
    log.warning(
        "%s port %d on %s is in use (another process of the same kind?): serving /metrics "
        "on port %d instead; give each process its own with --metrics-port",
        what, port, host, sock.getsockname()[1],
    )  # fmt: skip
    return sock


def _bound(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serve_probes(sock: socket.socket | None, probe: Probe) -> AsyncIterator[int | None]:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` on ``sock`` for the block's duration;
    yields the port (None when off)."""
    if sock is None:
        yield None
        return

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(reader, writer, probe)

    server = await asyncio.start_server(serve, sock=sock)
    host, port = sock.getsockname()[:2]
    log.info("health and metrics at http://%s:%d/metrics (/healthz, /readyz)", host, port)
    try:
        yield int(port)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)
