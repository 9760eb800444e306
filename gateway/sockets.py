"""The worker's socket and the kiosk's progress stream: long-lived connections on the hub.

The socket takes text frames of at most ``max_bytes`` (the settings' ``ws_max_bytes``): a
binary frame is closed with 1003 (unsupported data), a larger one with 1009 (too big).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.auth import Principal
from gateway.hub import Hub
from gateway.keys import GatewayKeys
from gateway.service import Conflict, Gateway
from gateway.store import FINAL_EVENTS
from gateway.wire import AnswerIn, AnswerOut
from infra.decoding import explain

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


async def progress(gw: Gateway, hub: Hub, keys: GatewayKeys, request_id: str) -> AsyncIterator[str]:
    """Server-sent events: the request's history so far, then each event as it happens,
    ending after the last one (filled, expired, cancelled or rejected)."""
    async with hub.listen(keys.request_channel(request_id)) as queue:
        seen: set[str] = set()
        history = await gw.history.events(request_id)
        for event in history:
            seen.add(event.event_id)
            yield _sse(event.type, event.model_dump_json())
        if any(e.type in FINAL_EVENTS for e in history):
            return
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            body = json.loads(data)
            if body.get("event_id") in seen:
                continue
            yield _sse(str(body.get("type", "message")), data)
            if body.get("type") in FINAL_EVENTS:
                return


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"
