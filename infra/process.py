"""A process: its logging, the stop event that Ctrl-C and SIGTERM set, and how a command-line
tool ends: with its exit code and at most one line of why, never a traceback.

Every CLI's ``main`` hands its body to ``run_cli``. A reader that went away (``gig-kiosk
markets | head``) ends it quietly; a service that does not answer is one line naming it, its
address and what to run. ``require`` checks the services a command needs before it starts,
so nothing half-starts (and no client library logs its retries) when the stack is down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NoReturn
from urllib.parse import urlparse

import httpx
from aiokafka.errors import KafkaConnectionError
from asyncpg.exceptions import CannotConnectNowError
from redis.exceptions import ConnectionError as RedisConnectionError

from infra import metrics
from infra.settings import Settings, get_settings


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, so services stop between batches and commit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


# Ids a line is about, set for a stretch of work (``log_ids``) or per line (``extra=``).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
WORKER_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("worker_id", default=None)
_PLAIN_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


@contextlib.contextmanager
def log_ids(request_id: str | None = None, worker_id: str | None = None) -> Iterator[None]:
    """Lines logged in the block carry these ids (in the JSON format)."""
    tokens = [(REQUEST_ID, REQUEST_ID.set(request_id)), (WORKER_ID, WORKER_ID.set(worker_id))]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids it is about (from
    ``extra=`` or ``log_ids``), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = {"request_id": REQUEST_ID.get(), "worker_id": WORKER_ID.get()}
        out |= {k: v for k, v in ids.items() if v is not None}
        out |= {
            k: v
            for k, v in vars(record).items()
            if k not in _PLAIN_ATTRS and k not in ("message", "asctime") and v is not None
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def json_logs_wanted(flag: bool | None = None) -> bool:
    """``--log-json``, or ``GIG_LOG_FORMAT=json``."""
    return bool(flag) or os.environ.get("GIG_LOG_FORMAT", "").strip().lower() == "json"


def setup_logging(verbose: bool = False, json_lines: bool | None = None) -> None:
    """Plain lines by default; JSON lines with ``json_lines`` or ``GIG_LOG_FORMAT=json``."""
    level = logging.DEBUG if verbose else logging.INFO
    if json_logs_wanted(json_lines):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


# --- command-line tools ------------------------------------------------------------------------

START_STACK = "start the stack with `make up` (or `.venv/bin/gig-stack up`)"
START_GATEWAY = "start it with `make serve` (or `.venv/bin/gig-gateway`)"
EX_USAGE = 2  # a refusal or a bad argument, as argparse exits
EX_UNAVAILABLE = 69  # sysexits.h: a service the command needs is not there
EX_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
CONNECT_TIMEOUT_S = 1.0  # loopback refuses at once; this bounds a remote host that drops

Need = Literal["kafka", "redis", "postgres"]
NAMES: dict[Need, str] = {"kafka": "Kafka", "redis": "Redis", "postgres": "PostgreSQL"}


class Unavailable(Exception):
    """A service the command needs does not answer; the message says which and what to run."""


def answers(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def addresses(settings: Settings, need: Need) -> list[tuple[str, int]]:
    """Where the settings say the service is (Kafka: every bootstrap address)."""
    if need == "kafka":
        return [_host_port(a, 9092) for a in settings.kafka_bootstrap.split(",") if a.strip()]
    url = urlparse(settings.redis_url if need == "redis" else settings.pg_dsn)
    return [(url.hostname or "127.0.0.1", url.port or (6379 if need == "redis" else 5432))]


def _host_port(address: str, default: int) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return (host.strip("[]") or "127.0.0.1", int(port)) if port.isdigit() else (address, default)


def down(settings: Settings, needs: Iterable[Need]) -> list[str]:
    """``"Kafka at 127.0.0.1:9092"`` for each needed service where nothing answers."""
    out = []
    for need in needs:
        where = addresses(settings, need)
        if not any(answers(h, p) for h, p in where):
            out.append(f"{NAMES[need]} at {','.join(f'{h}:{p}' for h, p in where)}")
    return out


def require(settings: Settings, *needs: Need) -> None:
    """Return if every service in ``needs`` answers, else raise ``Unavailable`` naming them."""
    missing = down(settings, needs)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise Unavailable(f"{' and '.join(missing)} {verb} not running: {START_STACK}")


def require_url(what: str, url: str, hint: str) -> None:
    """Return if something answers at the HTTP ``url``, else raise ``Unavailable``."""
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    if not answers(u.hostname or "127.0.0.1", port):
        raise Unavailable(f"{what} is not running at {url}: {hint}")


# What a client raises when its service went away after ``require`` (or was never checked).
LOST: tuple[tuple[type[Exception], str], ...] = (
    (KafkaConnectionError, "Kafka"),
    (RedisConnectionError, "Redis"),
    (CannotConnectNowError, "PostgreSQL"),
    (httpx.TransportError, "the gateway"),
    (ConnectionError, "a service"),  # asyncpg and raw sockets: the address is in the text
)


def lost(e: BaseException) -> str | None:
    """One line for a connection error of a client library, or None for anything else."""
    for kind, what in LOST:
        if isinstance(e, kind):
            detail = str(e).strip() or type(e).__name__
            return f"{what} cannot be reached ({detail[:160]}): is it running? {START_STACK}"
    return None


def run_cli(
    prog: str, body: Callable[[], int | None], expected: tuple[type[Exception], ...] = ()
) -> NoReturn:
    """Run a command's body and exit with its code; ``expected`` errors, a missing service or
    a lost connection end it with one line on stderr, a closed stdout quietly."""
    try:
        code = body() or 0
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's shutdown
    except BrokenPipeError:
        _quiet_stdout()
        code = EX_PIPE
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        code = _ended_by(prog, e, expected)
    sys.exit(code)


def _ended_by(prog: str, e: Exception, expected: tuple[type[Exception], ...]) -> int:
    """Say why in one line and return the exit code; re-raise what is not foreseen."""
    if isinstance(e, Unavailable):
        return _say(prog, str(e), EX_UNAVAILABLE)
    why = lost(e)  # before ``expected``: a lost connection is an OSError too
    if why is not None:
        return _say(prog, why, EX_UNAVAILABLE)
    if isinstance(e, expected):
        return _say(prog, str(e), EX_USAGE)
    raise e


def _say(prog: str, line: str, code: int) -> int:
    with contextlib.suppress(OSError):
        print(f"{prog}: {line}", file=sys.stderr)
    return code


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so flushing it again at exit raises nothing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def add_ops_args(parser: argparse.ArgumentParser, default: str) -> None:
    """``--metrics-port`` and ``--log-json``, shared by the services' command lines."""
    parser.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help=f"serve /healthz, /readyz and /metrics here ({default}; 0: not at all); "
        "give each process on a host its own",
    )  # fmt: skip
    parser.add_argument(
        "--log-json", action="store_true", help="JSON log lines (or GIG_LOG_FORMAT=json)"
    )


def service_start(
    args: argparse.Namespace, field: str, *needs: Need
) -> tuple[Settings, socket.socket | None]:
    """A service's command line made ready: the settings with its ``--metrics-port`` (the
    metrics setting ``field``), the ``needs`` checked, that port bound first (one asked for and
    taken is refused before anything starts), and logging set up."""
    settings = with_metrics_port(get_settings(), field, args.metrics_port)
    require(settings, *needs)
    m = settings.metrics
    sock = metrics.listen(m.host, getattr(m, field), strict=args.metrics_port is not None)
    setup_logging(args.verbose, args.log_json)
    return settings, sock


def with_metrics_port(settings: Settings, field: str, port: int | None) -> Settings:
    """The settings with the service's metrics port (``field``) set from the command line."""
    if port is None:
        return settings
    m = settings.metrics.model_copy(update={field: port})
    return settings.model_copy(update={"metrics": m})
