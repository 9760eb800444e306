"""A service process: its logging, and the stop event that Ctrl-C and SIGTERM set."""

from __future__ import annotations

import asyncio
import logging
import signal


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, so services stop between batches and commit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
