"""The chaos scenes: a Kafka and a Redis of the scenario's own, the services as processes,
simulated workers answering, a burst of requests with a fault in its middle, and the audit.

A scene checks workers in around a few markets, starts the presence consumer and two
dispatchers (separate processes, as in production), posts a burst of requests whose deadlines
are short, lets the simulated workers answer, injects the fault half-way through the burst,
waits until every acknowledged request has ended, and audits the log and the store.

Recovery is measured from what a reader of request-events sees (when each event reached it):
``fault_s`` is how long the fault itself took (a broker's restart, say); ``first_decision_s``
is the time from the fault to the first decision published after it; ``recovery_s`` is the worst
wait for a first decision counted from the fault (``first seen - max(requested, fault)``, over
every request that had none at the fault), i.e. how long until every partition was served again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from infra import audit, pg, stack
from infra.broker import KafkaCluster, private_cluster
from infra.clients import redis_session
from infra.clock import now_ms
from infra.kafka import ensure_topics, make_consumer, make_producer
from infra.keys import Keys
from infra.markets import Market, load_markets
from infra.publish import Outgoing, Publisher
from infra.redis_cluster import Cluster, free_base
from infra.redis_index import RedisWorkerIndex
from infra.settings import KafkaSettings, PolicySettings, Settings
from producers.population import near
from producers.workers import Behaviour, Crowd
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFERS, REQUEST_EVENTS, WORKER_EVENTS
from tests.conftest import TEST_DSN

OFFER_TTL_S = 3.0
SKILLS = ("general_labourer", "mover", "cleaner")
HEADCOUNTS = (1, 1, 1, 2, 2, 3)
MARKETS = 4
READY_TIMEOUT_S = 90.0
SETTLE_TIMEOUT_S = 45.0  # the sweep publishes an outbox left pending within ~40 s
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Size:
    """How big a scenario runs: ``short`` inside ``make test``, ``full`` in ``make chaos``."""

    name: str
    workers: int
    requests: int
    burst_s: float
    deadline_s: float


SHORT = Size("short", workers=200, requests=100, burst_s=5.0, deadline_s=15.0)
FULL = Size("full", workers=600, requests=400, burst_s=16.0, deadline_s=30.0)


# --- services as processes ------------------------------------------------------------------


@dataclass
class Service:
    """One service process (``python -m module``), its output in a log file of its own."""

    name: str
    module: str
    env: dict[str, str]
    logs: Path
    proc: subprocess.Popen[bytes] | None = None
    incarnation: int = 0

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}.{self.incarnation}.log"

    def start(self) -> None:
        self.incarnation += 1
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no clean shutdown, no commit, no outbox cleared."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, until: float) -> None:
        """Wait for the end SIGTERM asked for, then SIGKILL if it does not come in time."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()

    def said(self, text: str) -> bool:
        return self.log_path.exists() and text in self.log_path.read_text(errors="replace")


def stop_all(services: Sequence[Service]) -> None:
    """SIGTERM to every service at once, then each waited for (SIGKILL past the time)."""
    for service in services:
        service.terminate()
    until = time.monotonic() + STOP_TIMEOUT_S
    for service in services:
        service.wait(until)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def joined(*services: Service) -> None:
    async def check() -> bool:
        return all(s.said("joined group") for s in services)

    names = ", ".join(s.name for s in services)
    await wait_for(check, READY_TIMEOUT_S, f"{names} to join their groups")


# --- Redis of the scene's own ----------------------------------------------------------------


@dataclass
class OwnRedis:
    """A redis-server on a free port with its append-only file in ``data``."""

    port: int
    data: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        stack.start_redis(self.port, self.data)

    def pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.data / "redis.pid").read_text())
        return None

    def kill(self) -> None:
        """``kill -9`` and wait until the process is gone."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart_empty(self) -> None:
        """Killed, its data (the append-only file) deleted, started again on the same port."""
        self.kill()
        shutil.rmtree(self.data, ignore_errors=True)
        self.start()

    def stop(self) -> None:
        stack.stop_redis(self.port)
        self.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- the scene -------------------------------------------------------------------------------


@dataclass
class Follower:
    """What a reader of request-events sees: when each request's first event arrived and
    which requests ended."""

    first_seen_ms: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)

    def take(self, msg: ev.RequestEvent, seen_ms: int) -> None:
        self.first_seen_ms.setdefault(msg.request_id, seen_ms)
        if isinstance(msg, audit.TERMINAL_EVENTS):
            self.ended.add(msg.request_id)


class QuietCrowd(Crowd):
    """Simulated workers whose answers may fail to publish while a component is down (an
    answer lost that way is a worker who did not answer: the offer lapses)."""

    async def _answer(self, offer: ev.OfferMade, accept: bool, delay_s: float) -> None:
        with contextlib.suppress(Exception):
            await super()._answer(offer, accept, delay_s)


@dataclass
class Scene:
    size: Size
    root: Path
    cluster: KafkaCluster
    redis: OwnRedis | Cluster
    settings: Settings
    env: dict[str, str]
    presence: Service
    dispatchers: list[Service]
    markets: list[Market]
    publisher: Publisher | None = None
    follower: Follower = field(default_factory=Follower)
    requested_at: dict[str, int] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    crowd: Crowd | None = None
    killed: set[str] = field(default_factory=set)  # services the fault killed for good

    @property
    def services(self) -> list[Service]:
        return [self.presence, *self.dispatchers]


def scene_settings(bootstrap: str, redis_url: str, brokers: int, tag: str) -> Settings:
    replication = min(3, brokers)
    return Settings(
        kafka_bootstrap=bootstrap,
        kafka=KafkaSettings(
            replication=replication,
            min_insync=min(2, replication),
            new_group_start="earliest",
        ),
        redis_url=redis_url,
        pg_dsn=TEST_DSN,
        key_prefix=f"chaos{tag}",
        dispatcher_group=f"chaos-dispatcher-{tag}",
        presence_group=f"chaos-presence-{tag}",
        policy=PolicySettings(offer_ttl_s=OFFER_TTL_S),
        _env_file=None,
    )


def service_env(s: Settings, stack_dir: Path) -> dict[str, str]:
    k = s.kafka
    return {
        **os.environ,
        "GIG_STACK_DIR": str(stack_dir),  # no .stack/env of a running stack leaks in
        "GIG_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "GIG_REDIS_URL": s.redis_url,
        "GIG_REDIS_CLUSTER": str(s.redis_cluster).lower(),
        "GIG_PG_DSN": s.pg_dsn,
        "GIG_KEY_PREFIX": s.key_prefix,
        "GIG_DISPATCHER_GROUP": s.dispatcher_group,
        "GIG_PRESENCE_GROUP": s.presence_group,
        "GIG_KAFKA__NEW_GROUP_START": k.new_group_start,
        "GIG_KAFKA__REPLICATION": str(k.replication),
        "GIG_KAFKA__MIN_INSYNC": str(k.min_insync),
        "GIG_POLICY__OFFER_TTL_S": str(s.policy.offer_ttl_s),
    }


def pick_markets(count: int = MARKETS) -> list[Market]:
    """A few gig markets of one prefecture, so requests may reach the next market's workers."""
    gig = sorted((m for m in load_markets() if m.kind == "gig"), key=lambda m: m.market_id)
    first = gig[0].prefecture_code
    return [m for m in gig if m.prefecture_code == first][:count]


@contextlib.contextmanager
def infrastructure(
    root: Path, brokers: int, redis_cluster: bool
) -> Iterator[tuple[KafkaCluster, OwnRedis | Cluster]]:
    """The scene's Kafka (``brokers`` nodes) and Redis (one, or a cluster), stopped on exit."""
    with private_cluster(root / "kafka", brokers) as cluster:
        redis: OwnRedis | Cluster
        if redis_cluster:
            redis = Cluster(free_base(), root / "redis-cluster")
        else:
            redis = OwnRedis(stack.free_port(), root / "redis")
        try:
            redis.start()
            yield cluster, redis
        finally:
            redis.stop()


@contextlib.asynccontextmanager
async def open_scene(
    root: Path, size: Size, brokers: int = 1, redis_cluster: bool = False
) -> AsyncIterator[Scene]:
    """Everything up and ready: topics, registry, services joined, workers indexed."""
    tag = uuid.uuid4().hex[:8]
    with infrastructure(root, brokers, redis_cluster) as (cluster, redis):
        settings = scene_settings(cluster.bootstrap, redis.url, brokers, tag)
        settings = settings.model_copy(update={"redis_cluster": redis_cluster})
        await ensure_topics(settings.kafka_slice())
        await pg.prepare(TEST_DSN)
        env = service_env(settings, root / "stack")
        logs = root / "logs"
        logs.mkdir()
        scene = Scene(
            size=size,
            root=root,
            cluster=cluster,
            redis=redis,
            settings=settings,
            env=env,
            presence=Service("presence", "consumers.presence", env, logs),
            dispatchers=[
                Service(f"dispatcher-{i}", "consumers.dispatcher", env, logs) for i in range(2)
            ],
            markets=pick_markets(),
        )
        for service in scene.services:
            service.start()
        try:
            async with clients(scene):
                await check_in(scene)
                await joined(*scene.services)
                yield scene
        finally:
            stop_all(scene.services)


@contextlib.asynccontextmanager
async def clients(scene: Scene) -> AsyncIterator[None]:
    """The scene's publisher, its simulated workers and its request-events follower."""
    kafka = scene.settings.kafka_slice()
    producer = make_producer(kafka)
    await producer.start()
    scene.publisher = Publisher(producer)
    tag = scene.settings.key_prefix
    offers = make_consumer(kafka, OFFERS, group_id=f"{tag}-crowd")
    events = make_consumer(kafka, REQUEST_EVENTS, group_id=f"{tag}-follower")
    await offers.start()
    await events.start()
    behaviour = Behaviour(accept=0.7, silent=0.1, min_delay_ms=200, max_delay_ms=2000)
    scene.crowd = QuietCrowd(scene.publisher, behaviour, random.Random(7))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(scene.crowd.listen(offers, stop)),
        asyncio.create_task(follow(events, scene.follower, stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(scene.crowd.tasks):
            task.cancel()
        await asyncio.gather(*scene.crowd.tasks, return_exceptions=True)
        for client in (offers, events, producer):
            with contextlib.suppress(Exception):
                await client.stop()


async def follow(consumer: AIOKafkaConsumer, follower: Follower, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100, max_records=5000)
        seen = now_ms()
        for records in batch.values():
            for r in records:
                follower.take(ev.REQUEST_EVENT.validate_json(r.value), seen)


# --- workers and requests ----------------------------------------------------------------------


def worker_check_ins(size: Size, markets: Sequence[Market], tag: str) -> list[Outgoing]:
    """``size.workers`` workers spread over the markets, each with one or two of the skills."""
    rng = random.Random(size.workers)
    out = []
    for i in range(size.workers):
        market = markets[i % len(markets)]
        lon, lat = near(rng, market.lon, market.lat, 3.0)
        skills = tuple(sorted(set(rng.sample(SKILLS, rng.choice((1, 2))))))
        wid = f"W{tag}-{i:05d}"
        msg = ev.WorkerCheckedIn(
            event_id=f"ci:{wid}",
            at_ms=now_ms(),
            worker_id=wid,
            market_id=market.market_id,
            lon=lon,
            lat=lat,
            skills=skills,
        )
        out.append(Outgoing(WORKER_EVENTS, wid, msg))
    return out


async def check_in(scene: Scene) -> None:
    """Publish the workers' check-ins and wait until the index holds them all."""
    assert scene.publisher is not None
    tag = scene.settings.key_prefix[-6:]
    await scene.publisher.publish(worker_check_ins(scene.size, scene.markets, tag))
    async with redis_session(scene.settings) as redis:
        keys = Keys(scene.settings.key_prefix, scene.settings.worker_buckets)
        index = RedisWorkerIndex(redis, keys)

        async def indexed() -> bool:
            return await index.available() >= scene.size.workers

        await wait_for(indexed, READY_TIMEOUT_S, "the workers in the index")


def hire(rng: random.Random, markets: Sequence[Market], rid: str, deadline_s: float) -> Outgoing:
    at = now_ms()
    msg = ev.HireRequested(
        event_id=f"hr:{rid}",
        at_ms=at,
        request_id=rid,
        market_id=rng.choice(markets).market_id,
        skill=rng.choice(SKILLS),
        headcount=rng.choice(HEADCOUNTS),
        wage_yuan_per_day=float(rng.choice((200, 250, 300))),
        start_at_ms=at,
        deadline_at_ms=at + int(deadline_s * 1000),
    )
    return Outgoing(HIRE_REQUESTS, rid, msg)


async def post_burst(scene: Scene) -> None:
    """Post the requests at an even pace over the burst, in small groups; note those the
    broker acknowledged (a send refused while a broker is down is not acknowledged)."""
    assert scene.publisher is not None
    size = scene.size
    rng = random.Random(size.requests)
    tag = scene.settings.key_prefix[-6:]
    started = time.monotonic()
    step = max(1, size.requests // int(size.burst_s * 10))  # about ten sends a second
    for n in range(0, size.requests, step):
        group = [
            hire(rng, scene.markets, f"R{tag}-{i:05d}", size.deadline_s)
            for i in range(n, min(size.requests, n + step))
        ]
        for o in group:
            scene.requested_at[o.key] = o.message.at_ms  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            delivery = await scene.publisher.deliver(group)
            scene.acknowledged.update(m.key for m in delivery.acknowledged)
        due = started + (n + len(group)) * size.burst_s / size.requests
        await asyncio.sleep(max(0.0, due - time.monotonic()))


# --- one run: burst, fault, end, audit ------------------------------------------------------------


Fault = Callable[[Scene], Awaitable[None]]


@dataclass
class Outcome:
    """One scenario's figures, as a row of the results table."""

    scenario: str
    size: str
    brokers: int
    requests: int
    acknowledged: int
    ended: int
    filled: int
    workers_assigned: int
    fault_s: float  # how long the fault itself took (a broker's restart, say)
    first_decision_s: float
    recovery_s: float
    run_s: float
    report: audit.Report

    def row(self) -> dict[str, Any]:
        counts = {k: self.report.counts.get(k, 0) for k in audit.VIOLATIONS}
        return {
            "scenario": self.scenario,
            "size": self.size,
            "brokers": self.brokers,
            "requests": self.requests,
            "acknowledged": self.acknowledged,
            "ended": self.ended,
            "filled": self.filled,
            "workers_assigned": self.workers_assigned,
            **counts,
            "open": self.report.open,
            "pending_outboxes": self.report.pending_outboxes,
            "fault_s": round(self.fault_s, 2),
            "first_decision_s": round(self.first_decision_s, 2),
            "recovery_s": round(self.recovery_s, 2),
            "run_s": round(self.run_s, 1),
        }


async def run_with_fault(scene: Scene, name: str, fault: Fault) -> Outcome:
    """The burst with ``fault`` half-way through it, the wait for every request's end, the
    audit."""
    began = time.monotonic()
    fault_ms: list[int] = []

    async def inject() -> None:
        await asyncio.sleep(scene.size.burst_s / 2)
        fault_ms.append(now_ms())
        await fault(scene)
        fault_ms.append(now_ms())

    await asyncio.gather(post_burst(scene), inject())
    await wait_until_ended(scene)
    log, report = await audit_scene(scene)
    return Outcome(
        scenario=name,
        size=scene.size.name,
        brokers=len(scene.cluster.nodes),
        requests=scene.size.requests,
        acknowledged=len(scene.acknowledged),
        ended=len(scene.acknowledged & scene.follower.ended),
        filled=len({e.request_id for e in log.events if isinstance(e, ev.RequestFilled)}),
        workers_assigned=len(
            {(e.request_id, e.worker_id) for e in log.events if isinstance(e, ev.WorkerAssigned)}
        ),
        fault_s=(fault_ms[1] - fault_ms[0]) / 1000,
        first_decision_s=first_decision_s(scene.follower.first_seen_ms, fault_ms[0]),
        recovery_s=recovery_s(scene.requested_at, scene.follower.first_seen_ms, fault_ms[0]),
        run_s=time.monotonic() - began,
        report=report,
    )


async def wait_until_ended(scene: Scene) -> None:
    """Until every acknowledged request has a terminal event, or a generous time is up (the
    audit then reports the rest as lost)."""
    deadline = time.monotonic() + scene.size.deadline_s + 90.0
    for _ in itertools.count():
        if scene.acknowledged <= scene.follower.ended or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


async def audit_scene(scene: Scene) -> tuple[audit.Log, audit.Report]:
    """The auditor over the scene's log and store, once no outbox is pending (or the sweep's
    time is up). Scenarios ask for ``report.open == 0`` too, so an unended request never
    passes."""
    s = scene.settings
    keys = Keys(s.key_prefix, s.worker_buckets)
    markets = set(await pg.market_places(TEST_DSN))
    async with redis_session(s) as redis:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        store = await audit.read_store(redis, keys)
        while any(x.pending for x in store.values()) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            store = await audit.read_store(redis, keys)
        log = await audit.read_log(s.kafka_bootstrap)
    report = audit.audit(
        log, store, now_ms=now_ms(), markets=markets, acknowledged=scene.acknowledged
    )
    return log, report


def first_decision_s(first_seen: Mapping[str, int], fault_ms: int) -> float:
    """From the fault to the first request's first event seen after it."""
    after = [t for t in first_seen.values() if t >= fault_ms]
    return (min(after) - fault_ms) / 1000 if after else float("nan")


def recovery_s(
    requested_at: Mapping[str, int], first_seen: Mapping[str, int], fault_ms: int
) -> float:
    """The worst wait for a first decision, counted from the fault, of the requests that had
    none when it struck."""
    waits = [
        first_seen[r] - max(t, fault_ms)
        for r, t in requested_at.items()
        if r in first_seen and first_seen[r] >= fault_ms
    ]
    return max(waits, default=0) / 1000
