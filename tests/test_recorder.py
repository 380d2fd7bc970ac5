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
    assert len(read_table(tmp_path, "EV")) == 6  # readable while the run goes on
    w.finish({"ok": 1})
    assert is_complete(tmp_path)
    df = read_table(tmp_path, "EV")
    assert len(df) == 6
    soc = pivot(tmp_path, "EV", "soc")
    assert soc.loc[1800, "EV-0"] == pytest.approx(0.68)
    assert soc["EV-1"].isna().all()  # NaN is stored as null, never as a number


def _steps(out_dir, table) -> int:
    try:
        return read_table(out_dir, table)["time_s"].nunique()
    except FileNotFoundError:
        return 0


def test_truncated_stream_keeps_complete_batches(tmp_path):
    w = StepWriter(tmp_path)
    for t in range(10):
        w.append(t * 900, "EV", {f"EV-{i}": {"soc": 0.1 * i + t} for i in range(50)})
    w.close()
    part = next((tmp_path / "results" / "EV").glob("part-*.arrows"))
    data = part.read_bytes()
    part.write_bytes(data[: len(data) - 100])  # a crash in the middle of the last batch
    df = read_table(tmp_path, "EV")
    assert df["time_s"].nunique() == 9


def test_schema_change_continues_in_new_part(tmp_path):
    w = StepWriter(tmp_path)
    w.append(0, "Scheduler", {"Scheduler": {"objective": None, "status": "no_evs"}})
    w.append(900, "Scheduler", {"Scheduler": {"objective": 1.5, "status": "optimal"}})
    w.finish()
    df = read_table(tmp_path, "Scheduler")
    assert df["objective"].tolist()[1] == 1.5
    assert (tmp_path / "results" / "Scheduler.parquet").exists()


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
    deadline = time.time() + 60
    while time.time() < deadline and _steps(tmp_path, "Grid") < 5:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    df = read_table(tmp_path, "Grid")
    assert len(df) >= 5
    assert (df["vm_min_pu"] == 0.95).all()
    assert sorted(df["time_s"]) == list(range(0, 900 * len(df), 900))
    assert not is_complete(tmp_path)
