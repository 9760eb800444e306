"""Background tasks that notice their own death: logged, then restarted with backoff.

A gateway whose fan-out task died used to go on answering HTTP while no offer reached any
worker. Each background job (the fan-out consumer, the hub's pub/sub reader) now runs under a
``Supervisor``: when the job raises, is cancelled by anything but its owner, or returns while
it should still run, the supervisor logs it with the traceback and starts it again after a
delay that doubles with each failure in a row (``Backoff``), up to a cap. A run that lasted
``healthy_s`` resets the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("gateway.supervise")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts: ``first_s``, doubling per failure in a row, at most ``max_s``."""

    first_s: float = 0.2
    max_s: float = 15.0
    healthy_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        """The wait before restart number ``failures`` (1 for the first failure in a row)."""
        return float(min(self.max_s, self.first_s * 2 ** max(0, failures - 1)))


class Supervisor:
    """Runs ``job()`` as a task named ``name`` until ``stop()``, restarting it when it dies."""

    def __init__(
        self, name: str, job: Callable[[], Awaitable[None]], backoff: Backoff | None = None
    ) -> None:
        self.name = name
        self.job = job
        self.backoff = backoff or Backoff()
        self.current: asyncio.Task[None] | None = None  # the job's task now (tests kill it)
        self.restarts = 0
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._watch(), name=f"{self.name}-supervisor")

    async def stop(self, graceful: Callable[[], None] | None = None) -> None:
        """Stop supervising; ``graceful`` asks the job to end by itself (else it is cancelled)."""
        self._stopping.set()
        if graceful is not None:
            graceful()
        elif self.current is not None:
            self.current.cancel()
        if self._loop_task is not None:
            await self._loop_task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping.is_set():
            started = loop.time()
            self.current = asyncio.create_task(_run(self.job), name=self.name)
            try:
                await asyncio.wait([self.current])
            except asyncio.CancelledError:
                self.current.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.current
                raise
            if self._stopping.is_set():
                _log_end(self.name, self.current)
                return
            failures = 1 if loop.time() - started >= self.backoff.healthy_s else failures + 1
            delay = self.backoff.delay_s(failures)
            _log_death(self.name, self.current, failures, delay)
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)


async def _run(job: Callable[[], Awaitable[None]]) -> None:
    await job()


def _log_death(name: str, task: asyncio.Task[None], failures: int, delay: float) -> None:
    how = _how(task)
    log.error(
        "%s died (%s, %d in a row); restarting in %.1f s",
        name, how[0], failures, delay, exc_info=how[1],
    )  # fmt: skip


def _log_end(name: str, task: asyncio.Task[None]) -> None:
    how, error = _how(task)
    if error is not None:
        log.error("%s failed while stopping (%s)", name, how, exc_info=error)


def _how(task: asyncio.Task[None]) -> tuple[str, BaseException | None]:
    if task.cancelled():
        return "cancelled", None
    error = task.exception()
    if error is None:
        return "returned", None
    return type(error).__name__, error
