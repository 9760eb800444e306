"""Waiting out an outage: capped exponential backoff with jitter, every wait cut short by the
service's stop event, a log line now and then (not per attempt), the health kept up to date.

The delay is a pure function of the attempt number and a random draw (tested with a table);
``Retrying`` carries one run of attempts at one failing thing; ``unless_stopped`` bounds any
await by the stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from infra import metrics
from infra.health import Health

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger(__name__)
LOG_EVERY_S = 5.0  # a lasting outage is logged this often, not on every attempt
REASON_CHARS = 300


class Stopped(Exception):
    """The service was stopped while it waited."""


def until_stopped(
    run: Callable[P, Coroutine[Any, Any, None]],
) -> Callable[P, Coroutine[Any, Any, None]]:
    """A service that returns quietly when stopped before it could start (``Stopped``)."""

    @functools.wraps(run)
    async def service(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await run(*args, **kwargs)
        except Stopped:
            log.info("%s: stopped before it started", run.__name__)

    return service


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that double from ``base_s`` up to ``cap_s``."""

    base_s: float = 0.2
    cap_s: float = 5.0

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds before retry ``attempt`` (0 first), given a uniform ``draw`` in [0, 1): the
        upper half of the capped doubling is drawn at random ("equal jitter"), so peers that
        failed together do not all come back at once."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32))
        return ceiling / 2 + ceiling / 2 * draw


def describe(error: BaseException) -> str:
    """The error in one bounded line: its type and message."""
    name, said = type(error).__name__, str(error)
    text = said if said.startswith(name) else f"{name}: {said}" if said else name
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile; True when stopped."""
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def unless_stopped(
    work: Awaitable[T],
    stop: asyncio.Event,
    *,
    grace_s: float = 0.0,
    timeout_s: float | None = None,
) -> T:
    """Await ``work``; once ``stop`` is set it has ``grace_s`` more seconds, then it is cancelled
    and ``Stopped`` is raised (``TimeoutError`` after ``timeout_s`` without a stop)."""
    task = asyncio.ensure_future(work)
    try:
        if not task.done():
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {task, stopping}, timeout=timeout_s, return_when="FIRST_COMPLETED"
                )
            finally:
                stopping.cancel()
            if not task.done() and stop.is_set() and grace_s > 0:
                await asyncio.wait({task}, timeout=grace_s)
        if task.done():
            return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if stop.is_set():
        raise Stopped
    raise TimeoutError(f"no answer within {timeout_s:g} s")


class Retrying:
    """One run of attempts at ``what``: ``wait`` after each failure, ``succeeded`` at the end.

    ``line`` is the log line of a lasting failure, a %-format over ``what``, ``error``,
    ``for_s`` (how long it has been failing), ``attempts`` and ``delay_s``.
    """

    def __init__(
        self,
        what: str,
        stop: asyncio.Event,
        health: Health | None = None,
        *,
        backoff: Backoff = Backoff(),
        line: str = "%(what)s failing for %(for_s).0f s (%(error)s); retrying in %(delay_s).1f s",
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        since: float | None = None,
    ) -> None:
        self.what, self.stop, self.health, self.backoff = what, stop, health, backoff
        self.line, self.draw, self.clock = line, draw, clock
        self.attempts = 0
        self.failing_since = since  # when the trouble began (the first failure by default)
        self.logged_at: float | None = None
        self.system = "other"  # what failed last, for the error and retry counters

    async def wait(self, error: BaseException) -> bool:
        """Note a failure and wait before the next attempt; False when stopped meanwhile."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        delay = self.backoff.delay(self.attempts, self.draw())
        self.attempts += 1
        self.system = metrics.failed(error)
        if self.health is not None:
            self.health.degraded(f"{self.what}: {describe(error)}")
        if self.logged_at is None or now - self.logged_at >= LOG_EVERY_S:
            self.logged_at = now
            log.warning(self.line, self._facts(error, now, delay))
        if await pause(self.stop, delay):
            return False
        metrics.retried(self.system)
        return True

    def succeeded(self) -> None:
        """The thing works (again): say so if it had failed, and reset."""
        if self.attempts:
            log.info(
                "%s: working again after %d failed attempts in %.1f s",
                self.what,
                self.attempts,
                self.clock() - (self.failing_since or 0.0),
            )
            if self.health is not None:
                self.health.ok()
            metrics.recovered(self.system)
        self.attempts, self.logged_at, self.failing_since = 0, None, None

    def _facts(self, error: BaseException, now: float, delay: float) -> dict[str, object]:
        return {
            "what": self.what,
            "error": describe(error),
            "for_s": now - (self.failing_since or now),
            "attempts": self.attempts,
            "delay_s": delay,
        }
