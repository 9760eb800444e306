"""``gig-presence``: keeps the geo-sharded index of available workers up to date. It serves
``/healthz``, ``/readyz`` and ``/metrics`` on ``--metrics-port`` (settings:
``GIG_METRICS__PRESENCE_PORT``, 9102)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from consumers.services import run_presence
from infra import metrics
from infra.process import add_ops_args, run_cli, setup_logging, with_metrics_port
from infra.settings import get_settings


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
    settings = with_metrics_port(get_settings(), "presence_port", args.metrics_port)
    m = settings.metrics
    sock = metrics.listen(m.host, m.presence_port, strict=args.metrics_port is not None)
    setup_logging(args.verbose, args.log_json)
    asyncio.run(run_presence(settings, metrics_sock=sock))


if __name__ == "__main__":
    main()
