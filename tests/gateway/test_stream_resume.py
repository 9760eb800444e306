"""The kiosk's progress stream is numbered and resumes: each event carries its position in the
request's log as its SSE ``id``; a reconnect with ``Last-Event-ID`` (or ``?last_event_id=``)
gets what came after it, nothing twice and nothing missing, in log order. The stream stays open
while hired workers' jobs go on and ends once the request and every job have ended.

Events travel the real path: Kafka, the gateway's fan-out, Redis log and pub/sub, the stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest

from gateway.keys import GatewayKeys
from gateway.serve import Running
from gateway.sockets import progress
from gateway.store import RequestHistory, numbered
from infra.publish import Outgoing
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import REQUEST_EVENTS
from tests.conftest import eventually
from tests.gateway.conftest import MARKET, Recording, bearer, module_gateway, module_settings, token

API = "/api/v1"
Frame = dict[str, Any]


@pytest.fixture(scope="module")
def gw_settings(base_settings: Settings) -> Settings:
    return module_settings(base_settings, "sse")


@pytest.fixture(scope="module")
async def gateway(gw_settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    async with module_gateway(gw_settings) as running:
        yield running


@pytest.fixture
async def http(gateway: tuple[Running, Recording]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway[0].url, timeout=60) as client:
        yield client


def rid() -> str:
    return f"R-{uuid.uuid4().hex[:10]}"


class Events:
    """A request's lifecycle events, made one after another (several in one millisecond)."""

    def __init__(self, request_id: str) -> None:
        self.rid = request_id
        self.at = int(time.time() * 1000)
        self.n = 0

    def _common(self) -> dict[str, Any]:
        self.n += 1
        return {"event_id": f"e{self.n}:{self.rid}", "at_ms": self.at, "request_id": self.rid}

    def widened(self, km: float) -> ev.RadiusWidened:
        return ev.RadiusWidened(radius_km=km, **self._common())

    def wave(self, km: float) -> ev.WaveSent:
        return ev.WaveSent(wave=1, radius_km=km, candidates=(), **self._common())

    def assigned(self, worker: str) -> ev.WorkerAssigned:
        return ev.WorkerAssigned(worker_id=worker, offer_id=f"O-{worker}", assigned=1,
                                 headcount=1, **self._common())  # fmt: skip

    def filled(self) -> ev.RequestFilled:
        return ev.RequestFilled(headcount=1, offers_made=1, **self._common())

    def job(self, worker: str, status: str) -> ev.JobChanged:
        return ev.JobChanged(worker_id=worker, offer_id=f"O-{worker}", status=status,  # type: ignore[arg-type]
                             by="station", **self._common())  # fmt: skip


async def to_log(running: Running, *events: ev.RequestEvent) -> None:
    """Publish events on the request-events topic, as the dispatcher does."""
    sink = cast(Recording, running.gateway.sink).inner
    await sink.publish([Outgoing(REQUEST_EVENTS, e.request_id, e) for e in events])


async def logged(running: Running, request_id: str, count: int) -> None:
    async def there() -> bool:
        return len(await running.gateway.history.numbered(request_id)) >= count

    await eventually(there, what=f"{count} events in the log of {request_id}")


def parse(lines: list[str]) -> Frame:
    frame: Frame = {}
    for line in lines:
        name, _, value = line.partition(": ")
        frame[name] = json.loads(value) if name == "data" else value
    return frame


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The stream's events (comments skipped), each as {"id", "event", "data"}."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            if not line.startswith(":"):
                lines.append(line)
        elif lines:
            yield parse(lines)
            lines = []


async def read(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], count: int
) -> list[Frame]:
    """Open the stream, read ``count`` events, hang up."""
    got: list[Frame] = []
    async with asyncio.timeout(30), http.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for frame in frames(r):
            got.append(frame)
            if len(got) == count:
                break
    return got


def ids(got: list[Frame]) -> list[int]:
    return [int(f["id"]) for f in got]


async def posted(http: httpx.AsyncClient, station: dict[str, str]) -> str:
    request_id = rid()
    body = {"request_id": request_id, "market_id": MARKET, "skill": "cook"}
    answer = await http.post(f"{API}/requests", json=body, headers=station)
    assert answer.status_code == 202, answer.text
    return request_id


@pytest.mark.integration
async def test_a_reconnect_resumes_after_the_last_event_id_without_duplicates_or_gaps(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running = gateway[0]
    station = bearer(token(gw_settings, "station", MARKET))
    request_id = await posted(http, station)
    url = f"{API}/requests/{request_id}/events"
    e = Events(request_id)
    # One millisecond, in this order: the log's order is kept (the JSON text's would differ).
    first: list[ev.RequestEvent] = [e.wave(3), e.widened(6), e.widened(12), e.widened(25)]
    await to_log(running, *first)
    await logged(running, request_id, 4)

    got = await read(http, url, station, 4)
    assert ids(got) == [1, 2, 3, 4]
    assert [f["data"]["radius_km"] for f in got] == [3, 6, 12, 25]
    assert [f["event"] for f in got] == ["WaveSent"] + ["RadiusWidened"] * 3

    # While the kiosk is away: two new events and a redelivery of an old one.
    later = [e.widened(30), e.widened(40)]
    await to_log(running, *later, first[1])
    await logged(running, request_id, 6)

    async with (
        asyncio.timeout(30),
        http.stream("GET", url, headers=station | {"Last-Event-ID": "4"}) as r,
    ):
        stream = frames(r)
        resumed = [await anext(stream), await anext(stream)]
        assert ids(resumed) == [5, 6]
        assert [f["data"]["radius_km"] for f in resumed] == [30, 40]
        # Live now; a redelivered event is not sent again, the next one is.
        await to_log(running, first[2], e.widened(50))
        live = await anext(stream)
        assert (live["id"], live["data"]["radius_km"]) == ("7", 50)

    # A new page opening the stream: the query takes the place of the header.
    again = await read(http, f"{url}?last_event_id=6", station, 1)
    assert ids(again) == [7]
    everything = await read(http, url, station, 7)
    assert ids(everything) == list(range(1, 8))
    assert [f["data"]["radius_km"] for f in everything] == [3, 6, 12, 25, 30, 40, 50]


@pytest.mark.integration
async def test_the_stream_stays_open_while_a_job_goes_on_and_ends_with_it(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running = gateway[0]
    station = bearer(token(gw_settings, "station", MARKET))
    request_id = await posted(http, station)
    e = Events(request_id)
    await to_log(running, e.wave(3), e.assigned("W-1"), e.filled())
    await logged(running, request_id, 3)
    got: list[Frame] = []
    async with (
        asyncio.timeout(30),
        http.stream("GET", f"{API}/requests/{request_id}/events", headers=station) as r,
    ):
        async for frame in frames(r):
            got.append(frame)
            if frame["event"] == "RequestFilled":  # filled, but the job has only begun
                await to_log(running, e.job("W-1", "arrived"), e.job("W-1", "done"))
    # The stream read to its end: it closed itself after the job was done.
    assert [f["event"] for f in got] == [
        "WaveSent", "WorkerAssigned", "RequestFilled", "JobChanged", "JobChanged", "StreamEnd"
    ]  # fmt: skip
    assert [f["data"]["status"] for f in got[3:5]] == ["arrived", "done"]
    assert "id" not in got[-1]
    # A client reconnecting after the end gets nothing again, only the end.
    last = await read(http, f"{API}/requests/{request_id}/events?last_event_id=5", station, 1)
    assert [f["event"] for f in last] == ["StreamEnd"]


@pytest.mark.integration
async def test_a_bad_last_event_id_is_422(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    station = bearer(token(gw_settings, "station", MARKET))
    request_id = await posted(http, station)
    url = f"{API}/requests/{request_id}/events"
    assert (await http.get(url, headers=station | {"Last-Event-ID": "x1"})).status_code == 422
    assert (await http.get(f"{url}?last_event_id=-1", headers=station)).status_code == 422


@pytest.mark.integration
async def test_numbers_are_the_log_positions_for_every_process_and_redelivery(
    gw_settings: Settings, gateway: tuple[Running, Recording]
) -> None:
    redis = gateway[0].gateway.history.redis
    keys = GatewayKeys(gw_settings.key_prefix)
    one, two = RequestHistory(redis, keys), RequestHistory(redis, keys)  # two gateway processes
    a, b = rid(), rid()
    ea, eb = Events(a), Events(b)
    w1, w2, w3 = ea.wave(3), ea.widened(6), eb.wave(3)
    assert await one.add([(a, w1), (b, w3), (a, w2)]) == [1, 1, 2]
    # A redelivered batch (the other process took the partition over) keeps the numbers.
    w4 = ea.widened(12)
    assert await two.add([(a, w2), (a, w4)]) == [2, 3]
    assert [(n, x.event_id) for n, x in await two.numbered(a)] == [
        (1, w1.event_id), (2, w2.event_id), (3, w4.event_id)
    ]  # fmt: skip
    assert [n for n, _ in await one.numbered(a, after=2)] == [3]


# --- the race between the log and the live pushes, step by step --------------------------------


class FakeHub:
    def __init__(self, pushes: list[str]) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        for p in pushes:
            self.queue.put_nowait(p)

    @contextlib.asynccontextmanager
    async def listen(self, _channel: str) -> AsyncIterator[asyncio.Queue[str]]:
        yield self.queue


class FakeHistory:
    def __init__(self, log: list[ev.RequestEvent]) -> None:
        self.log = log

    async def numbered(self, _rid: str, after: int = 0) -> list[tuple[int, ev.RequestEvent]]:
        return list(enumerate(self.log, start=1))[after:]


class FakeGateway:
    def __init__(self, log: list[ev.RequestEvent]) -> None:
        self.history = FakeHistory(log)


def pushed(events: list[ev.RequestEvent], *numbers: int) -> list[str]:
    return [numbered(n, events[n - 1].model_dump_json()) for n in numbers]


def frame_ids(out: list[str]) -> list[int]:
    return [int(f.split("\n")[0].removeprefix("id: ")) for f in out if f.startswith("id: ")]


def a_day(request_id: str) -> list[ev.RequestEvent]:
    """Eight events: a wave, four widenings, a worker hired, the fill, the job done."""
    e = Events(request_id)
    return [e.wave(3), e.widened(6), e.widened(12), e.widened(25), e.widened(30),
            e.assigned("W-1"), e.filled(), e.job("W-1", "done")]  # fmt: skip


@pytest.mark.unit
async def test_pushes_already_read_from_the_log_are_dropped_and_a_gap_is_read_from_the_log() -> (
    None
):
    log = a_day("R-1")
    # The stream subscribed, then read the log when it held 3 events; pushes 2 and 3 had come
    # in meanwhile (dropped), 4 is the next one.
    gw, hub = FakeGateway(log[:3]), FakeHub(pushed(log, 2, 3, 4))
    out: list[str] = []
    async with asyncio.timeout(10):
        async for frame in progress(gw, hub, GatewayKeys("t"), "R-1"):  # type: ignore[arg-type]
            out.append(frame)
            if frame_ids(out)[-1:] == [4]:
                # The log grows to 6; push 5 was lost (6 shows the gap: the log is read), then
                # 5 and 6 come late (dropped) and 7 is the next one.
                gw.history.log.extend(log[3:6])
                for text in pushed(log, 6, 5, 6, 7):
                    hub.queue.put_nowait(text)
            if frame_ids(out)[-1:] == [7]:
                hub.queue.put_nowait(pushed(log, 8)[0])
    assert frame_ids(out) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert out[-1].startswith("retry: ") and "event: StreamEnd" in out[-1]


@pytest.mark.unit
async def test_a_resumed_stream_counts_the_jobs_it_sent_before_for_its_end() -> None:
    log = a_day("R-1")

    async def resumed(after: int) -> list[str]:
        gw, hub = FakeGateway(log), FakeHub([])
        async with asyncio.timeout(10):
            return [f async for f in progress(gw, hub, GatewayKeys("t"), "R-1", after)]  # type: ignore[arg-type]

    # Resumed after the fill: the job's end is all that is sent, and then the stream ends.
    out = await resumed(7)
    assert frame_ids(out) == [8] and "StreamEnd" in out[-1]
    # Resumed after everything: only the end. Numbers beyond the log (a lost log): all again.
    assert frame_ids(await resumed(8)) == []
    assert frame_ids(await resumed(99)) == list(range(1, 9))


@pytest.mark.unit
async def test_a_push_without_a_number_makes_the_stream_read_the_log() -> None:
    log = a_day("R-1")
    gw, hub = FakeGateway(log[:1]), FakeHub([])
    out: list[str] = []
    async with asyncio.timeout(10):
        async for frame in progress(gw, hub, GatewayKeys("t"), "R-1"):  # type: ignore[arg-type]
            out.append(frame)
            if frame_ids(out) == [1]:
                gw.history.log.extend(log[1:])
                hub.queue.put_nowait(log[1].model_dump_json())  # as an older gateway pushed
    assert frame_ids(out) == list(range(1, 9))
