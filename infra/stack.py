"""The embedded stack: Apache Kafka (KRaft), Redis and PostgreSQL on loopback.

``gig-stack up`` uses Redis and PostgreSQL where they answer and starts them where they don't
(Redis on the port ``GIG_REDIS_URL`` names, with an append-only file synced every second;
PostgreSQL's Debian cluster, with loopback authentication made to match the DSN), fetches and
starts Kafka (one node, or three with ``--brokers 3``) on the ports ``GIG_KAFKA_BOOTSTRAP``
names, creates the topics with their partitions and replication, migrates the database and
loads the market registry. It writes ``.stack/env`` for every later command.
``gig-stack down`` stops what ``up`` started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from infra import pg
from infra.broker import CONSUMER_GROUPS, BrokerError, KafkaCluster, fetch, tool
from infra.kafka import ensure_topics
from infra.loopback import answers, redis_command
from infra.process import require, run_cli
from infra.redis_cluster import Cluster as RedisCluster
from infra.redis_cluster import ClusterError
from infra.settings import STACK_DIR, Settings

log = logging.getLogger("stack")


class StackError(RuntimeError):
    """A service could not be started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(host: str, port: int, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(host, port):
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not answer on {host}:{port} within {timeout_s:.0f} s")
        time.sleep(0.05)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or default_port


# --- Redis -------------------------------------------------------------------------------------


def start_redis(port: int, data_dir: Path) -> None:
    if shutil.which("redis-server") is None:
        raise StackError("Redis is not installed: run `make system-deps`")
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(redis_command(port, data_dir), check=True)
    wait_for("127.0.0.1", port, "Redis")


def ensure_redis(url: str, root: Path = STACK_DIR) -> bool:
    """Use Redis if it answers, else start one on the URL's port; True if we started it."""
    host, port = host_port(url, 6379)
    if answers(host, port):
        return False
    start_redis(port, root / f"redis-{port}")
    log.info("Redis started on 127.0.0.1:%d (append-only file in %s)", port, root)
    return True


def stop_redis(port: int) -> None:
    subprocess.run(["redis-cli", "-p", str(port), "shutdown"], check=False, capture_output=True)


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_version() -> str:
    versions = sorted((Path(p).name for p in glob.glob("/etc/postgresql/*")), key=_numeric)
    if not versions or shutil.which("pg_ctlcluster") is None:
        raise StackError("PostgreSQL is not installed: run `make system-deps`")
    return versions[-1]


def _numeric(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


LOOPBACK_HBA = re.compile(r"^(host\s+all\s+all\s+(127\.0\.0\.1/32|::1/128)\s+)(\S+)", re.M)


def configure_postgres(version: str, port: int) -> bool:
    """Loopback clients without a password are trusted (the DSN has none), and the cluster
    listens on the DSN's port; True if a file changed."""
    conf_dir = Path("/etc/postgresql") / version / "main"
    changed = False
    hba = conf_dir / "pg_hba.conf"
    text = hba.read_text()
    trusted = LOOPBACK_HBA.sub(r"\1trust", text)
    if trusted != text:
        hba.write_text(trusted)
        changed = True
    conf = conf_dir / "postgresql.conf"
    text = conf.read_text()
    ported = re.sub(r"^#?port\s*=\s*\d+", f"port = {port}", text, count=1, flags=re.M)
    if ported != text:
        conf.write_text(ported)
        changed = True
    return changed


def ensure_postgres(dsn: str) -> bool:
    """Use PostgreSQL if it answers, else configure and start the local cluster; True if we
    started it."""
    host, port = host_port(dsn, 5432)
    if answers(host, port) and not _has_password_gap(dsn):
        return False
    version = pg_version()
    changed = configure_postgres(version, port)
    if answers(host, port):
        if changed:  # running, but asked TCP clients for a password: reload the new rules
            _pg_ctl(version, "reload")
        return False
    _pg_ctl(version, "start")
    wait_for(host, port, "PostgreSQL", timeout_s=60)
    log.info("PostgreSQL %s started on %s:%d", version, host, port)
    return True


def _has_password_gap(dsn: str) -> bool:
    """Whether the DSN has no password while the local cluster asks loopback clients for one."""
    if urlparse(dsn).password:
        return False
    return any(
        m.group(3) != "trust"
        for hba in glob.glob("/etc/postgresql/*/main/pg_hba.conf")
        for m in LOOPBACK_HBA.finditer(Path(hba).read_text())
    )


def _pg_ctl(version: str, action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True
    )


# --- Kafka -------------------------------------------------------------------------------------


def kafka_cluster(settings: Settings, brokers: int, root: Path = STACK_DIR) -> KafkaCluster:
    """The cluster the settings' first bootstrap address starts (fetched if need be)."""
    first = settings.kafka_bootstrap.split(",")[0]
    port = int(first.rsplit(":", 1)[1])
    try:
        libs = fetch(STACK_DIR)
    except BrokerError as e:
        raise StackError(str(e)) from None
    return KafkaCluster.plan(root / f"kafka-{brokers}", libs, brokers, port)


def cluster_env(cluster: KafkaCluster, redis_nodes: RedisCluster | None = None) -> str:
    """The ``.stack/env`` lines that point every later command at the cluster (and at the
    Redis Cluster, if one was started)."""
    lines = [f"GIG_KAFKA_BOOTSTRAP={cluster.bootstrap}"]
    if redis_nodes is not None:
        lines += [f"GIG_REDIS_URL={redis_nodes.url}", "GIG_REDIS_CLUSTER=true"]
    if cluster.replication > 1:
        lines += [
            f"GIG_KAFKA__REPLICATION={cluster.replication}",
            f"GIG_KAFKA__MIN_INSYNC={cluster.replication - 1}",
        ]
    return "\n".join(lines) + "\n"


async def prepare_services(settings: Settings) -> int:
    """Topics, schema and registry on running services; return the number of markets."""
    await ensure_topics(settings.kafka_slice())
    return await pg.prepare(settings.pg_dsn)


def redis_nodes(settings: Settings, root: Path = STACK_DIR) -> RedisCluster:
    return RedisCluster(settings.redis_cluster_port, root / "redis-cluster")


def up(
    settings: Settings, brokers: int = 1, root: Path = STACK_DIR, redis_cluster: bool = False
) -> str:
    """Bring the stack up; return the Kafka bootstrap addresses."""
    root.mkdir(parents=True, exist_ok=True)
    state = _state(root)
    if state.get("brokers", brokers) != brokers:
        raise StackError(
            f"a stack of {state['brokers']} broker(s) is up: run `gig-stack down` first"
        )
    started = set(state.get("started", []))
    nodes = redis_nodes(settings, root) if redis_cluster else None
    if nodes is not None:
        try:
            if nodes.start():
                started.add("redis-cluster")
        except ClusterError as e:
            raise StackError(str(e)) from None
        settings = settings.model_copy(update={"redis_url": nodes.url, "redis_cluster": True})
    elif ensure_redis(settings.redis_url, root):
        started.add("redis")
    if ensure_postgres(settings.pg_dsn):
        started.add("postgres")
    cluster = kafka_cluster(settings, brokers, root)
    try:
        cluster.start()
    except BrokerError as e:
        raise StackError(str(e)) from None
    _save_state(root, {"brokers": brokers, "started": sorted(started)})
    (root / "env").write_text(cluster_env(cluster, nodes))
    update = {
        "kafka_bootstrap": cluster.bootstrap,
        "kafka": settings.kafka.model_copy(
            update={
                "replication": cluster.replication,
                "min_insync": max(1, cluster.replication - 1),
            }
        ),
    }
    markets = asyncio.run(prepare_services(settings.model_copy(update=update)))
    log.info(
        "stack up: Kafka %s (%d broker(s)), Redis %s%s, PostgreSQL %s, %d markets",
        cluster.bootstrap,
        brokers,
        settings.redis_url,
        " (a cluster of 3 primaries and 3 replicas)" if nodes is not None else "",
        settings.pg_dsn.rsplit("@", 1)[-1],
        markets,
    )
    return cluster.bootstrap


def is_up(root: Path = STACK_DIR) -> bool:
    """Whether a stack that ``up`` started is running (its first broker answers)."""
    env = root / "env"
    if not (root / "stack.json").exists() or not env.exists():
        return False
    first = env.read_text().splitlines()[0].split("=", 1)[1].split(",")[0]
    host, port = first.rsplit(":", 1)
    return answers(host, int(port))


def down(settings: Settings, root: Path = STACK_DIR) -> None:
    """Stop the brokers, and Redis/PostgreSQL if ``up`` started them. Logs stay on disk."""
    state = _state(root)
    if "brokers" in state:
        kafka_cluster(settings, int(state["brokers"]), root).stop()
    (root / "env").unlink(missing_ok=True)
    started = state.get("started", [])
    if "redis" in started:
        stop_redis(host_port(settings.redis_url, 6379)[1])
    if "redis-cluster" in started:
        redis_nodes(settings, root).stop()
    if "postgres" in started:
        _pg_ctl(pg_version(), "stop")
    (root / "stack.json").unlink(missing_ok=True)
    log.info("stack down")


def _state(root: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        loaded: dict[str, Any] = json.loads((root / "stack.json").read_text())
        return loaded
    return {}


def _save_state(root: Path, state: dict[str, Any]) -> None:
    (root / "stack.json").write_text(json.dumps(state))


def status(settings: Settings, with_groups: bool = True) -> str:
    """One line per service: whether it answers; then one per consumer group: its lag."""
    lines = []
    kafka_up = False
    for address in settings.kafka_bootstrap.split(","):
        kafka_host, kafka_port = address.rsplit(":", 1)
        up = answers(kafka_host, int(kafka_port))
        kafka_up = kafka_up or up
        lines.append(f"kafka     {address:<24} {_up(up)}")
    for name, url, default in (
        ("redis", settings.redis_url, 6379),
        ("postgres", settings.pg_dsn, 5432),
    ):
        host, port = host_port(url, default)
        lines.append(f"{name:<9} {f'{host}:{port}':<24} {_up(answers(host, port))}")
    if settings.redis_cluster:
        roles = redis_nodes(settings).roles()
        lines += [f"redis     127.0.0.1:{p:<14} {role}" for p, role in sorted(roles.items())]
    if with_groups and kafka_up:
        lines += group_lines(settings)
    return "\n".join(lines)


@dataclass(frozen=True)
class GroupLag:
    """One consumer group's lag, summed over its partitions, from the consumer-groups tool."""

    group: str
    lag: int  # over the partitions with a committed offset
    partitions: int
    uncommitted: int  # partitions the group has committed nothing on yet
    members: int


def group_lags(table: str) -> list[GroupLag]:
    """Each group of a ``kafka-consumer-groups --describe`` table, in the order listed."""
    header: list[str] = []
    found: dict[str, list[list[str]]] = {}
    for line in table.splitlines():
        cols = line.split()
        if cols[:1] == ["GROUP"] and "LAG" in cols:
            header = cols
        elif header and len(cols) == len(header) and cols[header.index("PARTITION")].isdigit():
            found.setdefault(cols[0], []).append(cols)
    if not header:
        return []
    lag, member = header.index("LAG"), header.index("CONSUMER-ID")
    return [
        GroupLag(
            group,
            sum(int(r[lag]) for r in rows if r[lag].isdigit()),
            len(rows),
            sum(1 for r in rows if not r[lag].isdigit()),
            len({r[member] for r in rows if r[member] != "-"}),
        )
        for group, rows in found.items()
    ]


def group_lines(settings: Settings) -> list[str]:
    """``gig-stack status``'s lines about the consumer groups."""
    try:
        lags = group_lags(groups(settings))
    except (StackError, BrokerError, OSError) as e:
        return [f"groups    unknown: {str(e)[:200]}"]
    if not lags:
        return ["groups    none yet"]
    return [_group_line(g) for g in lags]


def _group_line(g: GroupLag) -> str:
    members = f"{g.members} member{'s' if g.members != 1 else ''}" if g.members else "no members"
    extra = f", {g.uncommitted} with nothing committed" if g.uncommitted else ""
    return f"group     {g.group:<24} lag {g.lag:,} ({g.partitions} partitions{extra}, {members})"


def _up(ok: bool) -> str:
    return "up" if ok else "down"


def groups(settings: Settings, group: str | None = None) -> str:
    """Every consumer group's lag per partition, from Kafka's own consumer-groups tool."""
    libs = fetch(STACK_DIR)
    which = ["--group", group] if group else ["--all-groups"]
    args = ["--bootstrap-server", settings.kafka_bootstrap, "--describe", *which]
    done = tool(libs, CONSUMER_GROUPS, args)
    if done.returncode != 0:
        raise StackError(f"kafka-consumer-groups failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-stack``."""
    parser = argparse.ArgumentParser(
        prog="gig-stack",
        description="Start or stop the embedded stack: Apache Kafka (KRaft), Redis and "
        "PostgreSQL on loopback. State and logs live in .stack/ of the checkout.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "services", "groups"],
        help="up: start what is missing; down: stop what up started; status: which services "
        "answer and each consumer group's total lag; services: only Redis and PostgreSQL "
        "(tests start their own broker); groups: every consumer group's lag per partition "
        "(Kafka's consumer-groups tool)",
    )
    parser.add_argument(
        "--brokers", type=int, choices=[1, 3], default=1,
        help="Kafka nodes: 1 (default), or 3 with replication 3 and min.insync.replicas 2",
    )  # fmt: skip
    parser.add_argument(
        "--redis-cluster", action="store_true",
        help="with up: a Redis Cluster of three primaries and three replicas on six ports "
        "from GIG_REDIS_CLUSTER_PORT (7001) instead of one Redis; later commands use it",
    )  # fmt: skip
    parser.add_argument("--group", help="with groups: only this consumer group")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_cli("gig-stack", lambda: _run(args, Settings()), expected=(StackError,))


def _run(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "up":
        print(up(settings, args.brokers, redis_cluster=args.redis_cluster))
    elif args.command == "services":
        ensure_redis(settings.redis_url)
        ensure_postgres(settings.pg_dsn)
    elif args.command == "down":
        down(settings)
    elif args.command == "groups":
        require(settings, "kafka")  # Kafka's tool would retry a missing broker for ever
        sys.stdout.write(groups(settings, args.group))
    else:
        print(status(settings))


if __name__ == "__main__":
    main()
