"""Recorder: every completed step readable, also after a hard kill."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from simulators.recorder.model import StepWriter, is_complete, pivot, read_table


def test_steps_round_trip(tmp_path):
    w = StepWriter(tmp_path)
    w.write_metadata({"scenario": "x", "seed": 3})
    for t in (0, 900, 1800):
        w.append(t, "EV", {"EV-0": {"soc": 0.5 + t / 1e4, "plugged": True},
                           "EV-1": {"soc": math.nan, "plugged": False}})
    assert not is_complete(tmp_path)
    w.finish({"ok": 1})
    assert is_complete(tmp_path)
    df = read_table(tmp_path, "EV")
    assert len(df) == 6
    soc = pivot(tmp_path, "EV", "soc")
    assert soc.loc[1800, "EV-0"] == pytest.approx(0.68)
    assert soc["EV-1"].isna().all()  # NaN is stored as null, never as a number


def test_killed_writer_keeps_completed_steps(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from simulators.recorder.model import StepWriter
        w = StepWriter({str(tmp_path)!r})
        t = 0
        while True:
            w.append(t, "Grid", {{"Grid": {{"vm_min_pu": 0.95}}}})
            t += 900
            time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    df = read_table(tmp_path, "Grid")
    assert len(df) >= 5
    assert sorted(df["time_s"]) == list(range(0, 900 * len(df), 900))
    assert not is_complete(tmp_path)
