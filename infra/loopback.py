"""Whether something listens on a loopback port: the stack's services, brokers and nodes."""

from __future__ import annotations

import socket


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
