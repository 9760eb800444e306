"""Running the gateway: in-process for tests and tools, ``gig-gateway`` and ``gig-serve``.

``gig-gateway`` runs one gateway process (start several on other ports to scale out; they
share the work through one consumer group and Redis pub/sub). ``gig-serve`` (``make serve``)
brings up the whole service for trying it in a browser: the embedded stack, the presence
consumer, a dispatcher and the gateway with development login on, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from consumers.services import run_dispatcher, run_presence
from gateway import auth
from gateway.app import Parts, create_app
from gateway.service import Gateway
from infra import stack
from infra.process import setup_logging, stop_on_signals
from infra.settings import Settings

log = logging.getLogger("gateway")
STARTUP_TIMEOUT_S = 30.0
WS_PROTOCOL_MAX_BYTES = 64 * 1024


class Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Running:
    """A gateway running in this process: its base URL and its app."""

    url: str
    app: FastAPI

    @property
    def gateway(self) -> Gateway:
        """The app's use cases (tests swap its ``sink`` to watch what is published)."""
        parts: Parts = self.app.state.parts
        return parts.gateway


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Running]:
    """Run the gateway in this event loop until the block ends (port 0: a free port).

    Raises ``auth.SecretError`` before listening when the secret is missing or too short."""
    auth.resolve_secret(settings.gateway)
    app = create_app(settings)
    # The protocol layer refuses frames far above what the app takes (it closes larger ones
    # with 1009 itself), so a 16 MiB frame is never read into memory, let alone parsed.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning",
        ws="websockets-sansio", lifespan="on", ws_max_size=WS_PROTOCOL_MAX_BYTES,
    )  # fmt: skip
    server = Server(config)
    task = asyncio.create_task(server.serve(), name="gateway-http")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the gateway stopped while starting")
        if loop.time() > deadline:
            raise RuntimeError("the gateway did not start in time")
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Running(f"http://{host}:{bound}", app)
    finally:
        server.should_exit = True
        await task


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    """One gateway process until ``stop``."""
    g = settings.gateway
    async with serving(settings, g.host, g.port) as running:
        log.info("gateway up at %s", running.url)
        await stop.wait()


def gateway_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-gateway``."""
    p = argparse.ArgumentParser(prog="gig-gateway", description="Run one gateway process.")
    p.add_argument("--port", type=int, help="port (settings: GIG_GATEWAY__PORT, 8000)")
    args = p.parse_args(argv)
    setup_logging()
    settings = Settings()
    if args.port is not None:
        settings = _with_gateway(settings, port=args.port)

    try:
        auth.resolve_secret(settings.gateway)
    except auth.SecretError as e:
        raise SystemExit(f"gig-gateway: {e}") from None

    async def run() -> None:
        await run_gateway(settings, stop_on_signals())

    asyncio.run(run())


def _with_gateway(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=changes)})


def banner(url: str, settings: Settings) -> str:
    """What a person needs to try the service in a browser."""
    secret = auth.resolve_secret(settings.gateway)
    market = "G4301001"
    return "\n".join([
        "",
        "即时快招已启动 / instant hire is up:",
        f"  驿站页面 kiosk page:   {url}/kiosk",
        f"  工人页面 worker page:  {url}/worker",
        f"  API 文档 OpenAPI:      {url}/docs  ({url}/openapi.json)",
        f"  AsyncAPI:             {url}/asyncapi.json",
        "",
        "开发登录已开启 / development login is on: each page logs in with one click.",
        f"  station {market} key / 驿站密钥: {auth.station_key(secret, market)}",
        "  other credentials: .venv/bin/gig-token --dev worker W-1 | station G4301002 | "
        "supervisor audit",
        "",
        "Open the worker page, check in at the market, then post a request on the kiosk page.",
        "按 Ctrl-C 停止 / Ctrl-C stops everything.",
        "",
    ])  # fmt: skip


async def serve_all(settings: Settings) -> None:
    """Presence, one dispatcher and the gateway in this process, until Ctrl-C."""
    stop = stop_on_signals()
    services = [
        asyncio.create_task(run_presence(settings, stop), name="presence"),
        asyncio.create_task(run_dispatcher(settings, stop), name="dispatcher"),
    ]
    g = settings.gateway
    try:
        async with serving(settings, g.host, g.port) as running:
            print(banner(running.url, settings), flush=True)
            await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*services, return_exceptions=True)
    print("stopped / 已停止", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-serve`` (``make serve``)."""
    p = argparse.ArgumentParser(prog="gig-serve", description="The whole service, to try it.")
    p.add_argument("--port", type=int, default=8000, help="gateway port (8000; 0: any free)")
    p.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = p.parse_args(argv)
    setup_logging()
    had_broker = stack.is_up()
    bootstrap = stack.up(Settings())
    settings = _with_gateway(Settings(kafka_bootstrap=bootstrap), port=args.port, dev_login=True,
                             dev_secret=True)  # fmt: skip
    try:
        asyncio.run(serve_all(settings))
    finally:
        if not (had_broker or args.keep_stack):
            stack.down(Settings())


if __name__ == "__main__":
    main()
