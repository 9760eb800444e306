"""``gig-dispatcher``: one dispatcher instance (the shell is ``consumers.dispatching``, its
wiring ``consumers.services``). It serves ``/healthz``, ``/readyz`` and ``/metrics`` on
``--metrics-port`` (settings: ``GIG_METRICS__DISPATCHER_PORT``, 9101)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from consumers.services import run_dispatcher
from infra import metrics
from infra.process import add_ops_args, run_cli, setup_logging, with_metrics_port
from infra.settings import get_settings


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
    settings = with_metrics_port(get_settings(), "dispatcher_port", args.metrics_port)
    m = settings.metrics
    # Bound first: a port asked for and taken is refused before anything starts.
    sock = metrics.listen(m.host, m.dispatcher_port, strict=args.metrics_port is not None)
    setup_logging(args.verbose, args.log_json)
    asyncio.run(run_dispatcher(settings, metrics_sock=sock))


if __name__ == "__main__":
    main()
