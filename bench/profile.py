"""Sampling the dispatcher process with py-spy while it serves the end-to-end load.

``py-spy record --format raw`` writes one line per distinct stack with its sample count; the
summary lists the functions by their share of samples (inclusive and self time).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 40


class Sampler:
    """``py-spy record`` on a process, from ``start`` until ``stop``."""

    def __init__(self, pid: int, raw: Path) -> None:
        self.pid, self.raw = pid, raw
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        beside = Path(sys.executable).parent / "py-spy"  # the virtualenv's, when not on PATH
        binary = str(beside) if beside.exists() else shutil.which("py-spy")
        if binary is None:
            print("    py-spy is not installed: no dispatcher profile", flush=True)
            return False
        args = [
            binary,
            "record",
            "-p",
            str(self.pid),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(self.raw),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _frame_name(frame: str) -> str:
    """``func (path/file.py:12)`` → ``func file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}".strip()


def summarise(raw: Path) -> str:
    """The functions by share of samples, inclusive and self."""
    inclusive, own, total = Counter[str](), Counter[str](), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        total += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        own[frames[-1]] += int(count)
    if not total:
        return "no samples\n"
    lines = [f"{total} samples of the dispatcher process", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(TOP)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(TOP // 2)]
    return "\n".join(lines) + "\n"
