"""Apache Kafka in KRaft mode on loopback: fetched from Maven Central, formatted, started.

The broker's jars come from Maven Central through ``infra/kafka-broker/pom.xml`` and
``mvn dependency:copy-dependencies``, cached in ``.stack/kafka-<version>/libs``. Each node acts
as broker and controller (``process.roles=broker,controller``) with a static voter set, its
log on disk under its own directory, and a small heap: these machines have two cores.

Node ``i`` (from 0) listens on ``base_port + 2 i`` for clients and ``base_port + 2 i + 1`` for
the controller quorum, so the default cluster of one is 9092/9093 and a cluster of three adds
9094/9095 and 9096/9097. ``KafkaCluster.kill`` and ``restart`` serve the fault tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.loopback import answers

log = logging.getLogger("broker")
HERE = Path(__file__).resolve().parent / "kafka-broker"
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j2.properties"
# A node gets at most this heap; three of them and the services fit in a 2-core, 24 GiB box.
HEAP = "-Xmx512m"
HEAP_CLUSTER = "-Xmx384m"
START_TIMEOUT_S = 90.0
# Nodes outlive the KafkaCluster object that started them (``gig-stack up`` returns while they
# run): their handles stay here so they are reaped, not reported as leaked, when they end.
_LAUNCHED: list[subprocess.Popen[bytes]] = []


class BrokerError(RuntimeError):
    """The broker could not be fetched or started; the message says what to do."""


def kafka_version() -> str:
    """The Kafka version the pom names."""
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert found, "infra/kafka-broker/pom.xml names no kafka.version"
    return found.group(1)


def fetch(cache: Path) -> Path:
    """The folder of the broker's jars, fetched from Maven Central once into ``cache``."""
    libs = cache / f"kafka-{kafka_version()}" / "libs"
    stamp = libs / ".complete"
    if stamp.exists():
        return libs
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerError(f"{tool} is not installed: run `make system-deps`")
    log.info("fetching Apache Kafka %s from Maven Central into %s", kafka_version(), libs)
    libs.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BrokerError(f"Maven could not fetch the broker:\n{done.stdout[-3000:]}")
    stamp.touch()
    return libs


def java(libs: Path, main: str, *args: str, heap: str = "-Xmx256m") -> list[str]:
    """The command line that runs a Kafka class with the fetched jars."""
    return [
        "java",
        heap,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


@dataclass
class Node:
    """One KRaft node: broker and controller in one JVM."""

    node_id: int
    port: int
    controller_port: int
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    def properties(self, voters: str, replication: int) -> str:
        min_isr = min(2, replication)
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.home / 'data'}",
                "num.partitions=8",
                f"default.replication.factor={replication}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={replication}",
                # Few group-offset partitions: the first group forms in a second, not ten.
                "offsets.topic.num.partitions=8",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min_isr}",
                # Topics are created by the services with their partition counts.
                "auto.create.topics.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "num.network.threads=2",
                "num.io.threads=4",
                "log.retention.hours=168",
                "log.segment.bytes=134217728",
                "",
            ]
        )


@dataclass
class KafkaCluster:
    """One or more KRaft nodes on loopback with their logs under ``root``."""

    root: Path
    libs: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def plan(cls, root: Path, libs: Path, size: int, base_port: int) -> KafkaCluster:
        nodes = [
            Node(i + 1, base_port + 2 * i, base_port + 2 * i + 1, root / f"node-{i + 1}")
            for i in range(size)
        ]
        return cls(root, libs, nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def replication(self) -> int:
        return min(3, len(self.nodes))

    def format(self) -> None:
        """Write each node's properties and format its log directory (once)."""
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_file = self.root / "cluster-id"
        self.root.mkdir(parents=True, exist_ok=True)
        if not cluster_file.exists():
            cluster_file.write_text(uuid.uuid4().hex[:22])
        cluster_id = _kafka_uuid(cluster_file.read_text())
        for n in self.nodes:
            n.home.mkdir(parents=True, exist_ok=True)
            props = n.home / "server.properties"
            props.write_text(n.properties(voters, self.replication))
            if (n.home / "data" / "meta.properties").exists():
                continue
            cmd = java(
                self.libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
            )
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BrokerError(f"formatting node {n.node_id} failed:\n{done.stderr[-2000:]}")

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every node that is not running and wait until each answers."""
        self.format()
        for n in self.nodes:
            if not self.running(n):
                self._launch(n)
        for n in self.nodes:
            self._wait(n, timeout_s)

    def _launch(self, n: Node) -> None:
        heap = HEAP if len(self.nodes) == 1 else HEAP_CLUSTER
        cmd = java(self.libs, "kafka.Kafka", str(n.home / "server.properties"), heap=heap)
        with (n.home / "broker.log").open("ab") as out:
            n.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _LAUNCHED.append(n.proc)
        n.pid_file.write_text(str(n.proc.pid))
        log.info("Kafka node %d starting on %s (pid %d)", n.node_id, n.address, n.proc.pid)

    def _wait(self, n: Node, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not answers("127.0.0.1", n.port):
            if n.proc is not None and n.proc.poll() is not None:
                tail = (n.home / "broker.log").read_text(errors="replace")[-2000:]
                raise BrokerError(f"Kafka node {n.node_id} exited:\n{tail}")
            if time.monotonic() > deadline:
                raise BrokerError(f"Kafka node {n.node_id} did not answer on {n.address}")
            time.sleep(0.1)

    def running(self, n: Node) -> bool:
        pid = self.pid_of(n)
        return pid is not None and _alive(pid) and answers("127.0.0.1", n.port)

    def pid_of(self, n: Node) -> int | None:
        if n.proc is not None:
            return n.proc.pid
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(n.pid_file.read_text())
        return None

    def kill(self, index: int) -> None:
        """``kill -9`` node ``index`` (from 0): no clean shutdown, its log stays on disk."""
        self._signal(self.nodes[index], signal.SIGKILL)

    def restart(self, index: int, timeout_s: float = START_TIMEOUT_S) -> None:
        n = self.nodes[index]
        if not self.running(n):
            self._launch(n)
        self._wait(n, timeout_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every node cleanly (SIGTERM), then SIGKILL what lingers."""
        for n in self.nodes:
            self._signal(n, signal.SIGTERM, wait_s=0)
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            pid = self.pid_of(n)
            while pid is not None and _alive(pid) and time.monotonic() < deadline:
                _reap(n)
                time.sleep(0.1)
            self._signal(n, signal.SIGKILL)
            n.pid_file.unlink(missing_ok=True)

    def _signal(self, n: Node, sig: signal.Signals, wait_s: float = 10.0) -> None:
        pid = self.pid_of(n)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            _reap(n)
            time.sleep(0.05)
        _reap(n)
        if not _alive(pid):
            n.proc = None


def tool(libs: Path, main: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's command-line tools (e.g. the consumer-groups command)."""
    return subprocess.run(java(libs, main, *args), capture_output=True, text=True, check=False)


CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def _kafka_uuid(seed: str) -> str:
    """A Kafka cluster id (22 characters of URL-safe base64) derived from ``seed``."""
    import base64

    raw = uuid.UUID(hex=(seed.encode().hex() + "0" * 32)[:32]).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    return True


def _reap(n: Node) -> None:
    if n.proc is not None:
        n.proc.poll()
    for proc in [p for p in _LAUNCHED if p.poll() is not None]:
        _LAUNCHED.remove(proc)


@contextlib.contextmanager
def private_cluster(root: Path, size: int = 1, cache: Path | None = None) -> Iterator[KafkaCluster]:
    """A cluster of this process's own on free loopback ports, stopped on exit (tests, the
    benchmarks and the chaos suite use it; ``cache`` is where the jars are kept)."""
    from infra.settings import STACK_DIR

    libs = fetch(cache or STACK_DIR)
    cluster = _started(root, libs, size)
    try:
        yield cluster
    finally:
        cluster.stop()


def _started(root: Path, libs: Path, size: int, tries: int = 3) -> KafkaCluster:
    """A started cluster on free ports. A port found free can be taken by another process's
    outgoing connection before the broker binds it: then the node exits, and the cluster is
    planned again on other ports, in a fresh folder."""
    for attempt in range(1, tries + 1):
        cluster = KafkaCluster.plan(root / f"try-{attempt}", libs, size, _free_ports(2 * size))
        try:
            cluster.start()
            return cluster
        except BrokerError:
            cluster.stop()
            if attempt == tries:
                raise
            log.warning("Kafka did not start on %s; trying other ports", cluster.bootstrap)
    raise AssertionError("unreachable")


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that nothing listens on."""
    import socket

    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base: int = s.getsockname()[1]
        if base + count < 65535 and not any(answers("127.0.0.1", base + i) for i in range(count)):
            return base
    raise BrokerError(f"found no {count} consecutive free ports on loopback")
