"""A task that lives as long as a block: started on entry, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """Run ``work`` as a task for the block's duration; cancel it (and wait) on the way out."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def within(work: Awaitable[Any], timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``work``; past that, cancel it and go on without waiting
    for it to end (a library's clean-up may await its own tasks through a cancellation).
    True when it ended in time (its error, if any, is raised)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait([task], timeout=timeout_s)
    if not done:
        task.cancel()
        task.add_done_callback(_forget)
        return False
    task.result()
    return True


def _forget(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it at exit
