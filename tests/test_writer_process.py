"""The recorder's writer process: same files as writing inline, failures loud, kills survived."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from simulators.recorder.model import StepWriter, read_table
from simulators.recorder.writer_process import WriterFailed, WriterProcess

ROOT = Path(__file__).resolve().parents[1]


def _steps(writer, n_steps: int) -> None:
    """The same steps to any writer: entity sets that change, NaN, row-wise tables."""
    for k in range(n_steps):
        n = 3 if k < 2 else 4  # a fourth EV arrives at step 2
        writer.append_columns(900 * k, "EV", {
            "entity": [f"EV-{i}" for i in range(n)],
            "soc": np.array([0.1 * i + 0.01 * k for i in range(n)]),
            "p_kw": np.array([math.nan] + [11.0] * (n - 1)),
            "plugged": np.array([True] * n),
        })
        writer.append(900 * k, "Scheduler", {"Scheduler": {"status": "optimal" if k else "no_evs",
                                                           "objective": None if k == 0 else 1.5 * k}})
        if isinstance(writer, WriterProcess):
            writer.end_step()


def test_same_tables_as_writing_inline(tmp_path):
    inline = StepWriter(tmp_path / "inline")
    _steps(inline, 5)
    inline.close()
    StepWriter(tmp_path / "process")
    child = WriterProcess(tmp_path / "process")
    _steps(child, 5)
    child.close()
    for table in ("EV", "Scheduler"):
        assert read_table(tmp_path / "process", table).equals(read_table(tmp_path / "inline", table)), table
    ev = read_table(tmp_path / "process", "EV")
    assert ev["p_kw"].isna().sum() == 5  # NaN stored as null, never as a number
    assert ev.groupby("time_s").size().tolist() == [3, 3, 4, 4, 4]


def test_child_failure_fails_the_writer(tmp_path):
    StepWriter(tmp_path)
    child = WriterProcess(tmp_path)
    child.append_columns(0, "Bad", {"entity": ["a"], "x": [object()]})  # Arrow cannot store it
    child.end_step()
    with pytest.raises(WriterFailed, match="Arrow"):
        for k in range(1, 200):  # the failure shows at a later step or at the latest on close
            child.append(900 * k, "Grid", {"Grid": {"vm_min_pu": 1.0}})
            child.end_step()
            time.sleep(0.01)
        child.close()


def test_steps_sent_before_a_kill_reach_disk(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from simulators.recorder.model import StepWriter
        from simulators.recorder.writer_process import WriterProcess
        StepWriter({str(tmp_path)!r})
        w = WriterProcess({str(tmp_path)!r})
        k = 0
        while True:
            w.append(900 * k, "Grid", {{"Grid": {{"vm_min_pu": 0.95}}}})
            w.end_step()
            k += 1
            print(k, flush=True)
            time.sleep(0.005)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        sent = 0
        while sent < 50:
            sent = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline:  # the orphaned writer drains the pipe, then exits
        try:
            if len(read_table(tmp_path, "Grid")) >= sent:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    df = read_table(tmp_path, "Grid")
    assert len(df) >= sent
    assert sorted(df["time_s"]) == list(range(0, 900 * len(df), 900))


def test_unpicklable_value_fails_the_step_not_the_file(tmp_path):
    StepWriter(tmp_path)
    child = WriterProcess(tmp_path)
    child.append(0, "Grid", {"Grid": {"vm_min_pu": 1.0}})
    child.end_step()
    child.append(900, "Grid", {"Grid": {"vm_min_pu": lambda: 1.0}})
    with pytest.raises((pickle.PicklingError, AttributeError)):
        child.end_step()
    child.append(1800, "Grid", {"Grid": {"vm_min_pu": 0.9}})
    child.close()  # the pipe still holds whole steps only
    assert read_table(tmp_path, "Grid")["time_s"].tolist() == [0, 1800]
