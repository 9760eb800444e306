"""The worker's socket and the kiosk's progress stream: long-lived connections on the hub.

The progress stream numbers its events by their position in the request's log (the SSE
``id``), so a client that reconnects with ``Last-Event-ID`` gets only what it has not seen.

The socket takes text frames of at most ``max_bytes`` (the settings' ``ws_max_bytes``): a
binary frame is closed with 1003 (unsupported data), a larger one with 1009 (too big).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.auth import Principal
from gateway.hub import Hub
from gateway.keys import GatewayKeys
from gateway.service import Conflict, Gateway
from gateway.store import FINAL_EVENTS, unnumbered
from gateway.wire import AnswerIn, AnswerOut
from infra.decoding import explain
from schemas import events as ev

KEEPALIVE_S = 15.0
UNSUPPORTED_DATA = 1003
MESSAGE_TOO_BIG = 1009


async def worker_session(
    ws: WebSocket, gw: Gateway, hub: Hub, keys: GatewayKeys, who: Principal, max_bytes: int
) -> None:
    """Push the worker's offers as they come; take their answers; until they hang up."""
    await ws.accept()
    async with hub.listen(keys.worker_channel(who.subject)) as queue:
        # Listen first, then resend the live offers: an offer made in between may arrive
        # twice (the page keeps one per offer id), never not at all.
        live = await gw.offers.live(who.subject, gw.clock())
        for offer in live:
            await ws.send_text(offer.model_dump_json())
        hello = {"type": "Welcome", "worker_id": who.subject, "live_offers": len(live)}
        await ws.send_text(json.dumps(hello))
        pump = asyncio.create_task(_pump(ws, queue))
        try:
            await _answers(ws, gw, who, max_bytes)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await pump


async def _pump(ws: WebSocket, queue: asyncio.Queue[str]) -> None:
    while True:
        await ws.send_text(await queue.get())


async def _answers(ws: WebSocket, gw: Gateway, who: Principal, max_bytes: int) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while (text := await _text_frame(ws, max_bytes)) is not None:
            try:
                body = AnswerIn.model_validate_json(text)
            except ValidationError as e:
                refused = {"type": "Error", "reason": explain(e)}
                await ws.send_text(json.dumps(refused))
                continue
            await ws.send_text((await _answer(gw, who, body)).model_dump_json())


async def _text_frame(ws: WebSocket, max_bytes: int) -> str | None:
    """The next text frame, or None once the socket is closed (by the worker, or here for a
    binary or oversized frame)."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        await ws.close(UNSUPPORTED_DATA, "text frames only")
        return None
    if len(text) > max_bytes or len(text.encode()) > max_bytes:
        await ws.close(MESSAGE_TOO_BIG, "frame too big")
        return None
    return str(text)


async def _answer(gw: Gateway, who: Principal, body: AnswerIn) -> AnswerOut:
    try:
        return await gw.answer(who, body)
    except Conflict as e:
        return AnswerOut(type="AnswerRefused", offer_id=body.offer_id, answer=body.type,
                         reason=str(e))  # fmt: skip


# A stream that ended tells a client that would reconnect by itself to wait an hour.
END_RETRY_MS = 3_600_000
KEEP_ALIVE = ": keep-alive\n\n"


@dataclass
class Followed:
    """What a progress stream knows of its request: the number of the last event it sent, and
    whether the request has ended and every hired worker's job with it."""

    last: int = 0
    ended: bool = False
    hired: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)

    def note(self, e: ev.RequestEvent) -> None:
        if e.type in FINAL_EVENTS:
            self.ended = True
        elif isinstance(e, ev.WorkerAssigned):
            self.hired.add(e.worker_id)
        elif isinstance(e, ev.JobChanged) and e.status in ev.JOB_ENDS:
            self.finished.add(e.worker_id)

    @property
    def over(self) -> bool:
        return self.ended and self.hired <= self.finished

    def frames(self, events: list[tuple[int, ev.RequestEvent]]) -> list[str]:
        """Take in events (each with its number) in log order; the frames of those not sent."""
        out = []
        for n, e in events:
            if n <= self.last:
                continue
            self.note(e)
            self.last = n
            out.append(f"id: {n}\nevent: {e.type}\ndata: {e.model_dump_json()}\n\n")
        return out


async def progress(
    gw: Gateway, hub: Hub, keys: GatewayKeys, request_id: str, after: int = 0
) -> AsyncIterator[str]:
    """Server-sent events, each with its number in the request's log as its ``id``: the
    history after ``after`` (the client's ``Last-Event-ID``), then each event as it happens,
    with a comment every ``KEEPALIVE_S`` so proxies keep the connection.

    It stays open after the request is filled or expires, because hired workers' jobs go on
    (``JobChanged``); once the request has ended and every hired worker's job has too, it
    sends ``StreamEnd`` and closes. A stream for a request that never ends is closed by the
    client leaving."""
    async with hub.listen(keys.request_channel(request_id)) as queue:
        # Subscribed first, then the log read: an event appended in between comes both ways
        # and is sent once, by its number.
        history = await gw.history.numbered(request_id)
        if history and after > history[-1][0]:
            after = 0  # numbers from a log that is gone (Redis lost it): start again
        seen = Followed(last=after)
        for n, e in history:
            if n <= after:
                seen.note(e)  # sent before, and still part of whether the stream may end
        for frame in seen.frames(history):
            yield frame
        while not seen.over:
            try:
                text = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield KEEP_ALIVE
                continue
            for frame in await _next(gw, request_id, seen, text):
                yield frame
        yield _sse_end()


async def _next(gw: Gateway, request_id: str, seen: Followed, text: str) -> list[str]:
    """The frames for one push: none if sent already; the push itself if it is the next
    number; otherwise (a push was lost, or came without a number) the log from the last one
    sent."""
    number, data = unnumbered(text)
    if number is not None and number <= seen.last:
        return []
    if number == seen.last + 1:
        try:
            return seen.frames([(number, ev.REQUEST_EVENT.validate_json(data))])
        except ValidationError:
            pass
    return seen.frames(await gw.history.numbered(request_id, seen.last))


def _sse_end() -> str:
    body = json.dumps({"reason": "the request and every job of it have ended"})
    return f"retry: {END_RETRY_MS}\nevent: StreamEnd\ndata: {body}\n\n"
