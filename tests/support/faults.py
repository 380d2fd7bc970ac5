"""Fault injection helpers: signal a simulator's child process in the middle of a run."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


def children(module: str, parent: int | None = None) -> list[int]:
    """Pids of the children of ``parent`` (default: this process) whose command line
    contains ``module``."""
    me, found = parent or os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me and module in cmdline:
            found.append(int(entry))
    return found


def signal_child_after(out_dir: Path, module: str, sig: signal.Signals, steps: int,
                       timeout_s: float = 120.0) -> threading.Thread:
    """Send ``sig`` to the child running ``module`` once ``steps`` grid steps are on disk.

    Runs in a daemon thread (the co-simulation keeps the main thread); the thread's
    ``signalled`` attribute holds the pids it signalled.
    """
    from tests.support.runs import wait_for_recorded_steps

    def watch() -> None:
        wait_for_recorded_steps(out_dir, steps, timeout_s, poll_s=0.02)
        for pid in children(module):
            os.kill(pid, sig)
            thread.signalled.append(pid)

    thread = threading.Thread(target=watch, daemon=True)
    thread.signalled = []
    thread.start()
    return thread
