"""Running the gateway: in-process for tests and tools, ``gig-gateway`` and ``gig-serve``.

``gig-gateway`` runs one gateway process (start several on other ports to scale out; they
share the work through one consumer group and Redis pub/sub). ``gig-serve`` (``make serve``)
brings up the whole service for trying it in a browser: the embedded stack, the presence
consumer, a dispatcher, the archiver and the gateway with development login on, until Ctrl-C.

Both take the gateway's host and port from settings (``GIG_GATEWAY__PORT``; ``--port`` wins)
and bind it before anything else starts: a port in use is refused at once, in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from archive.archiver import run_archiver
from consumers.services import run_dispatcher, run_presence
from gateway import auth
from gateway.app import Parts, create_app
from gateway.service import Gateway
from infra import stack
from infra.process import require, run_cli, setup_logging, stop_on_signals
from infra.settings import Settings, get_settings

log = logging.getLogger("gateway")
STARTUP_TIMEOUT_S = 30.0
WS_PROTOCOL_MAX_BYTES = 64 * 1024


class PortBusy(Exception):
    """The gateway's port is taken; the message says how to choose another."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port) for the gateway to serve on; bound now,
    so a port in use is refused before any consumer starts."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is fine
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno != errno.EADDRINUSE:
            raise
        raise PortBusy(
            f"port {port} on {host} is in use (another gig-serve or gig-gateway?): stop it, or "
            f"choose another port: GIG_GATEWAY__PORT={port + 1} make serve, or --port {port + 1}"
        ) from None
    sock.set_inheritable(True)
    return sock


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
    settings: Settings, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
) -> AsyncIterator[Running]:
    """Run the gateway in this event loop until the block ends (port 0: a free port), on
    ``sock`` if given (bound by ``listen``), else on a socket bound to ``host:port`` now.

    Raises ``auth.SecretError`` before listening when the secret is missing or too short, and
    ``PortBusy`` when the port is taken."""
    auth.resolve_secret(settings.gateway)
    sock = sock or listen(host, port)
    app = create_app(settings)
    # The protocol layer refuses frames far above what the app takes (it closes larger ones
    # with 1009 itself), so a 16 MiB frame is never read into memory, let alone parsed.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning",
        ws="websockets-sansio", lifespan="on", ws_max_size=WS_PROTOCOL_MAX_BYTES,
    )  # fmt: skip
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-http")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the gateway stopped while starting")
        if loop.time() > deadline:
            raise RuntimeError("the gateway did not start in time")
        await asyncio.sleep(0.02)
    bound = sock.getsockname()[1]
    try:
        yield Running(f"http://{host}:{bound}", app)
    finally:
        server.should_exit = True
        await task


async def run_gateway(
    settings: Settings, stop: asyncio.Event, sock: socket.socket | None = None
) -> None:
    """One gateway process until ``stop``."""
    g = settings.gateway
    async with serving(settings, g.host, g.port, sock) as running:
        log.info("gateway up at %s", running.url)
        await stop.wait()


def gateway_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-gateway``."""
    p = argparse.ArgumentParser(prog="gig-gateway", description="Run one gateway process.")
    p.add_argument("--port", type=int, help="port (settings: GIG_GATEWAY__PORT, 8000)")
    args = p.parse_args(argv)
    settings = get_settings()
    if args.port is not None:
        settings = _with_gateway(settings, port=args.port)
    run_cli("gig-gateway", lambda: _gateway(settings), expected=(auth.SecretError, PortBusy))


def _gateway(settings: Settings) -> None:
    """Port, secret and services first, each refused in one line; then the gateway."""
    sock = listen(settings.gateway.host, settings.gateway.port)
    auth.resolve_secret(settings.gateway)
    require(settings, "kafka", "redis", "postgres")
    setup_logging()

    async def run() -> None:
        await run_gateway(settings, stop_on_signals(), sock)

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
        f"  监管台 console:        {url}/supervisor",
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


async def serve_all(settings: Settings, sock: socket.socket | None = None) -> None:
    """Presence, one dispatcher, the archiver (the console reads the archive) and the
    gateway in this process, until Ctrl-C."""
    stop = stop_on_signals()
    services = [
        asyncio.create_task(run_presence(settings, stop), name="presence"),
        asyncio.create_task(run_dispatcher(settings, stop), name="dispatcher"),
        asyncio.create_task(run_archiver(settings, stop), name="archiver"),
    ]
    g = settings.gateway
    try:
        async with serving(settings, g.host, g.port, sock) as running:
            print(banner(running.url, settings), flush=True)
            await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*services, return_exceptions=True)
    print("stopped / 已停止", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-serve`` (``make serve``)."""
    p = argparse.ArgumentParser(prog="gig-serve", description="The whole service, to try it.")
    p.add_argument("--port", type=int, help="gateway port (GIG_GATEWAY__PORT, 8000; 0: any free)")
    p.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = p.parse_args(argv)
    run_cli("gig-serve", lambda: _serve(args, get_settings()),
            expected=(stack.StackError, PortBusy, auth.SecretError))  # fmt: skip


def _serve(args: argparse.Namespace, base: Settings) -> None:
    """Bind the gateway's port (refused at once if taken), bring the stack up, serve."""
    port = base.gateway.port if args.port is None else args.port
    sock = listen(base.gateway.host, port)
    setup_logging()
    had_broker = stack.is_up()
    bootstrap = stack.up(base)
    # Read again: ``up`` has just written .stack/env (the bootstrap, a cluster's replication).
    settings = _with_gateway(Settings(kafka_bootstrap=bootstrap), port=port, dev_login=True,
                             dev_secret=True)  # fmt: skip
    try:
        asyncio.run(serve_all(settings, sock))
    finally:
        if not (had_broker or args.keep_stack):
            stack.down(base)


if __name__ == "__main__":
    main()
