"""Services on loopback: whether something listens on a port, and how a Redis server is run
(alone, or as a node of a Redis Cluster)."""

from __future__ import annotations

import socket
from pathlib import Path


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def redis_command(port: int, data_dir: Path) -> list[str]:
    """Redis on loopback, durable to within a second (AOF ``everysec``), data in ``data_dir``."""
    return [
        "redis-server",
        "--daemonize", "yes",
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--zset-max-listpack-entries", "512",  # geo shards compact (dispatch.geo)
        "--dir", str(data_dir),
        "--pidfile", str(data_dir / "redis.pid"),
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
