"""``gig-dispatcher``: one dispatcher instance (the shell is ``consumers.dispatching``, its
wiring ``consumers.services``). It serves ``/healthz``, ``/readyz`` and ``/metrics`` on
``--metrics-port`` (settings: ``GIG_METRICS__DISPATCHER_PORT``, 9101)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from consumers.services import run_dispatcher
from infra import metrics
from infra.process import add_ops_args, run_cli, service_start


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gig-dispatcher",
        description="Run a dispatcher instance: consumes hire requests and offer answers, "
        "publishes offers and request lifecycle events. Start several for more throughput; "
        "they share the work through one Kafka consumer group.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    add_ops_args(parser, "GIG_METRICS__DISPATCHER_PORT, 9101")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-dispatcher``."""
    args = parse_args(argv)
    run_cli("gig-dispatcher", lambda: _dispatcher(args), expected=(metrics.MetricsPortBusy,))


def _dispatcher(args: argparse.Namespace) -> None:
    settings, sock = service_start(args, "dispatcher_port")
    asyncio.run(run_dispatcher(settings, metrics_sock=sock))


if __name__ == "__main__":
    main()
