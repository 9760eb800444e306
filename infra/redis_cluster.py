"""A Redis Cluster on loopback: three primaries and three replicas of Debian's ``redis-server``.

``gig-stack up --redis-cluster`` starts it on six consecutive ports from
``GIG_REDIS_CLUSTER_PORT`` (7001 by default), each node with its own directory, append-only
file and ``nodes.conf`` under ``.stack/redis-cluster/``. A node that restarts finds its
``nodes.conf`` and rejoins; a cluster that was formed before is not formed again. Tests start
their own cluster on free ports (``Cluster.start`` in a temporary directory).

A node misses the others after ``NODE_TIMEOUT_MS``; a primary missed that long is failed over to
its replica, which the cluster elects within about two timeouts.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.loopback import answers, redis_command

log = logging.getLogger("stack")

NODES = 6
REPLICAS = 1  # per primary: three primaries, three replicas
NODE_TIMEOUT_MS = 2000
BUS_OFFSET = 10_000  # Redis Cluster's node-to-node bus listens on port + 10000


class ClusterError(RuntimeError):
    """The cluster could not be started or formed; the message says why."""


@dataclass(frozen=True)
class Cluster:
    """Six nodes on consecutive ports from ``first_port``, their data under ``root``."""

    first_port: int
    root: Path

    @property
    def ports(self) -> list[int]:
        return [self.first_port + i for i in range(NODES)]

    @property
    def url(self) -> str:
        """A seed node: the client learns the others from it."""
        return f"redis://127.0.0.1:{self.first_port}/0"

    def node_dir(self, port: int) -> Path:
        return self.root / f"node-{port}"

    def command(self, port: int) -> list[str]:
        d = self.node_dir(port)
        return [
            *redis_command(port, d),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        ]  # fmt: skip

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start the nodes that do not answer and form the cluster if it never was; wait until
        it serves every slot. True if anything was started."""
        started = [p for p in self.ports if not answers("127.0.0.1", p)]
        for port in started:
            self.start_node(port)
        if not self._formed():
            self._create()
        self.wait_ok(timeout_s)
        return bool(started)

    def start_node(self, port: int) -> None:
        self.node_dir(port).mkdir(parents=True, exist_ok=True)
        subprocess.run(self.command(port), check=True)
        _wait_answers(port)

    def _formed(self) -> bool:
        info = self.cli(self.first_port, "cluster", "info")
        return "cluster_slots_assigned:16384" in info

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        log.info("forming a Redis Cluster of %s", ", ".join(addresses))
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(REPLICAS),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ClusterError(f"redis-cli --cluster create failed: {done.stdout[-800:]}")

    def wait_ok(self, timeout_s: float = 60.0) -> None:
        """Until every node that answers says the cluster is ok and knows every other."""
        deadline = time.monotonic() + timeout_s
        while not self.ok():
            if time.monotonic() > deadline:
                raise ClusterError(f"the Redis Cluster on {self.ports} is not ok: {self.roles()}")
            time.sleep(0.2)

    def ok(self) -> bool:
        """Every live node says the cluster serves all slots and sees every live node, and
        every live replica is in sync with its primary."""
        live = [p for p in self.ports if answers("127.0.0.1", p)]
        return bool(live) and all(
            "cluster_state:ok" in self.cli(p, "cluster", "info")
            and len(re.findall(r"\sconnected\b", self.cli(p, "cluster", "nodes"))) >= len(live)
            and _in_sync(self.cli(p, "info", "replication"))
            for p in live
        )

    def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot now, as the first live node sees it."""
        live = next(p for p in self.ports if answers("127.0.0.1", p))
        slot = int(self.cli(live, "cluster", "keyslot", key))
        for line in self.cli(live, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                first, _, last = span.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise ClusterError(f"no live primary serves slot {slot}")

    def wait_failed_over(self, port: int, timeout_s: float = 60.0) -> None:
        """Until a replica took over the slots of the (killed) primary on ``port``."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = [p for p in self.ports if answers("127.0.0.1", p)]
            views = [self.cli(p, "cluster", "nodes") for p in live]
            failed = all(_flags_of(view, port) & {"fail"} for view in views)
            if failed and self.ok():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"no replica took over from 127.0.0.1:{port}: {self.roles()}")
            time.sleep(0.1)

    def roles(self) -> dict[int, str]:
        """Each live node's role: ``master`` or ``slave`` (Redis's words)."""
        out = {}
        for p in self.ports:
            for line in self.cli(p, "cluster", "nodes").splitlines():
                if "myself" in line:
                    out[p] = "master" if "master" in line.split()[2] else "slave"
        return out

    def primaries(self) -> list[int]:
        return sorted(p for p, role in self.roles().items() if role == "master")

    def kill(self, port: int) -> None:
        """``kill -9`` one node."""
        pid = int((self.node_dir(port) / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while answers("127.0.0.1", port):
            time.sleep(0.02)
        (self.node_dir(port) / "redis.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        for port in self.ports:
            subprocess.run(
                ["redis-cli", "-p", str(port), "shutdown", "nosave"],
                capture_output=True, check=False, timeout=10,
            )  # fmt: skip

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.stdout


def _in_sync(replication: str) -> bool:
    """A primary, or a replica whose link to its primary is up."""
    return "role:master" in replication or "master_link_status:up" in replication


def _flags_of(view: str, port: int) -> set[str]:
    for line in view.splitlines():
        fields = line.split()
        if fields and fields[1].split("@")[0].endswith(f":{port}"):
            return set(fields[2].split(","))
    return set()


def _wait_answers(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise ClusterError(f"Redis did not answer on 127.0.0.1:{port}")
        time.sleep(0.05)


def free_base(tries: int = 200) -> int:
    """A first port with the six node ports and their bus ports all free, every one of them
    below Linux's ephemeral range (32768 up), where outgoing connections take their ports."""
    for _ in range(tries):
        base = random.randrange(10_000, 32_768 - BUS_OFFSET - NODES)
        ports = [base + i for i in range(NODES)]
        if all(_bindable(p) and _bindable(p + BUS_OFFSET) for p in ports):
            return base
    raise ClusterError("no free ports for a Redis Cluster")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
