"""``gig-presence``: keeps the geo-sharded index of available workers up to date. It serves
``/healthz``, ``/readyz`` and ``/metrics`` on ``--metrics-port`` (settings:
``GIG_METRICS__PRESENCE_PORT``, 9102)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from consumers.services import run_presence
from infra import metrics
from infra.process import add_ops_args, run_cli, service_start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gig-presence",
        description="Consume worker check-ins, moves and offline events into the Redis index "
        "of available workers (sharded by map cell and skill). Ctrl-C stops it cleanly.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    add_ops_args(parser, "GIG_METRICS__PRESENCE_PORT, 9102")
    args = parser.parse_args(argv)
    run_cli("gig-presence", lambda: _presence(args), expected=(metrics.MetricsPortBusy,))


def _presence(args: argparse.Namespace) -> None:
    settings, sock = service_start(args, "presence_port")
    asyncio.run(run_presence(settings, metrics_sock=sock))


if __name__ == "__main__":
    main()
