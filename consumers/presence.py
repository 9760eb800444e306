"""``gig-presence``: keeps the geo-sharded index of available workers up to date."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from consumers.services import run_presence
from infra.process import setup_logging


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gig-presence",
        description="Consume worker check-ins, moves and offline events into the Redis index "
        "of available workers (sharded by map cell and skill). Ctrl-C stops it cleanly.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    asyncio.run(run_presence())


if __name__ == "__main__":
    main()
