"""Helpers for tests that start ``run_cosim.py`` in a child process."""

from __future__ import annotations

import time
from pathlib import Path

from simulators.recorder.model import read_table


def wait_for_recorded_steps(out: Path, n_steps: int, timeout_s: float = 120.0, poll_s: float = 0.2) -> None:
    """Return once the run writing to ``out`` has recorded ``n_steps`` grid steps
    (or after ``timeout_s``; the caller's assertions then say what is missing)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if read_table(out, "Grid")["time_s"].nunique() >= n_steps:
                return
        except FileNotFoundError:
            pass
        time.sleep(poll_s)
