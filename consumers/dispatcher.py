"""``gig-dispatcher``: one dispatcher instance (the shell is ``consumers.dispatching``, its
wiring ``consumers.services``)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from consumers.services import run_dispatcher
from infra.process import setup_logging


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gig-dispatcher",
        description="Run a dispatcher instance: consumes hire requests and offer answers, "
        "publishes offers and request lifecycle events. Start several for more throughput; "
        "they share the work through one Kafka consumer group.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-dispatcher``."""
    args = parse_args(argv)
    setup_logging(args.verbose)
    asyncio.run(run_dispatcher())


if __name__ == "__main__":
    main()
