"""The command line: options, overrides, exit codes, progress, console script."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scenarios.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main
from scenarios.config import ScenarioError
from scenarios.overrides import apply_overrides, parse_assignment, prepare
from scenarios.progress import CaseProgress
from simulators.recorder.model import is_complete, read_table
from tests.support.runs import wait_for_recorded_steps

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_cosim.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def test_help_shows_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("examples:", "--set", "--steps", "--until", "--seed", "--list", "exit status:", "130"):
        assert word in text


def test_list_names_every_shipped_scenario_with_a_description(capsys):
    assert main(["--list"]) == EXIT_OK
    text = capsys.readouterr().out
    for path in (ROOT / "scenarios").glob("*.toml"):
        description = tomllib.loads(path.read_text())["scenario"]["description"]
        assert f"{path.stem}" in text and description in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("ev-grid-cosim 0.1.0")


@pytest.mark.parametrize("args, words", [
    (["--cases", "nosuch"], ["--cases", "nosuch", "default"]),
    (["--set", "fleet.soc_target=1.5"], ["fleet.soc_target", "[0, 1]"]),
    (["--set", "fleet.batery_kwh=10"], ["fleet.batery_kwh", "unknown field"]),
    (["--set", "soc_target=1"], ["section.key=value"]),
    (["--steps", "0"], ["--steps", "[1, 64]"]),
    (["--until", "16:10"], ["--until", "step boundary"]),
    (["--jobs", "0"], ["--jobs"]),
    (["nosuch_study"], ["file not found", "--list"]),
])
def test_usage_errors_exit_2_before_starting(tmp_path, capsys, args, words):
    assert main([*args, "--out", str(tmp_path / "o")]) == EXIT_USAGE
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert not (tmp_path / "o").exists()


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--steps", "4", "--until", "20:00"])
    assert exc.value.code == EXIT_USAGE


def test_set_values_are_read_as_toml():
    assert parse_assignment("scheduler.strategy=smart") == ("scheduler.strategy", "smart")
    assert parse_assignment("fleet.soc_target=0.9") == ("fleet.soc_target", 0.9)
    assert parse_assignment("fleet.counts={R1 = 3}") == ("fleet.counts", {"R1": 3})
    assert parse_assignment("scenario.end=2024-01-17T20:00:00") == (
        "scenario.end", dt.datetime(2024, 1, 17, 20))
    assert parse_assignment("fleet.can_reactive=true") == ("fleet.can_reactive", True)


def test_override_reaches_cases_that_set_the_same_field():
    raw = {"scheduler": {"strategy": "smart"},
           "cases": [{"name": "a"}, {"name": "b", "scheduler": {"strategy": "v2g", "k_weight": 1.0}}]}
    out = apply_overrides(raw, {"scheduler.strategy": "uncoordinated", "fleet.counts.R1": 2})
    assert out["scheduler"]["strategy"] == "uncoordinated"
    assert out["cases"][1]["scheduler"] == {"strategy": "uncoordinated", "k_weight": 1.0}
    assert "scheduler" not in out["cases"][0]
    assert out["fleet"] == {"counts": {"R1": 2}}
    assert raw["scheduler"]["strategy"] == "smart"  # the input is not changed


def test_seed_steps_and_until_shorten_and_reseed():
    s = prepare("default", seed=7, steps=4)
    meta = s.cases[0].scenario
    assert meta.seed == 7 and meta.n_steps == 4 and meta.end == dt.datetime(2024, 1, 17, 17)
    assert prepare("default", until="20:00").cases[0].scenario.end == dt.datetime(2024, 1, 17, 20)
    assert prepare("default", until="04:00").cases[0].scenario.end == dt.datetime(2024, 1, 18, 4)
    with pytest.raises(ScenarioError, match="--steps"):
        prepare("default", steps=65)


@pytest.mark.faults
def test_evs_without_a_stay_inside_the_horizon_are_refused(tmp_path):
    """The issue's example: 10:00-14:00 with evening arrivals sampled from the GEV."""
    path = tmp_path / "noon.toml"
    path.write_text('[scenario]\nstart = 2024-01-17T10:00:00\nend = 2024-01-17T14:00:00\n'
                    '[fleet]\ncounts = {R1 = 3}\n')
    with pytest.raises(ScenarioError, match="no stay inside"):
        prepare(path)
    path.write_text('[scenario]\nstart = 2024-01-17T10:00:00\nend = 2024-01-17T14:00:00\n'
                    '[[fleet.evs]]\nbus = "R1"\narrival_h = 4.0\ndeparture_h = 6.0\n')
    with pytest.raises(ScenarioError, match=r"evs\[0\].arrival_h"):
        prepare(path)


def test_short_run_exits_0_with_periodic_progress_lines(tmp_path):
    out = tmp_path / "o"
    proc = cli("--steps", "3", "--no-plots", "--out", str(out), "--set", "fleet.counts={R1 = 4}")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert is_complete(out)
    # not a terminal: a final progress line instead of a bar
    assert "default: 3/3 steps" in proc.stderr and "simulated up to 2024-01-17 16:45" in proc.stderr
    assert "INFO" not in proc.stderr  # mosaik's INFO lines are held back
    assert "min_voltage_pu" in proc.stdout
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["provenance"]["version"] == "0.1.0"
    assert meta["provenance"]["packages"]["mosaik"].startswith("3.6")
    assert meta["provenance"]["command"][1:] == ["--steps", "3", "--no-plots", "--out", str(out), "--set",
                                                 "fleet.counts={R1 = 4}"]


def test_quiet_prints_nothing_on_success(tmp_path):
    proc = cli("--steps", "2", "--no-plots", "--quiet", "--out", str(tmp_path / "o"),
               "--set", "fleet.counts={R1 = 1}")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_failed_case_exits_1(tmp_path):
    """A simulator that cannot be reached (nothing listens on port 1): exit 1 with the reason."""
    proc = cli("--steps", "2", "--no-plots", "--out", str(tmp_path / "o"),
               "--set", 'simulators.pv={starter = "connect", addr = "127.0.0.1:1"}')
    assert proc.returncode == EXIT_FAILED
    assert "run failed" in proc.stderr or "error" in proc.stderr.lower()


def test_ctrl_c_exits_130_and_keeps_completed_steps(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_cosim.py"), "--out", str(out), "--no-plots",
                             "--set", "scenario.step_s=60"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_recorded_steps(out, 5)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    assert not is_complete(out) and read_table(out, "Grid")["time_s"].nunique() >= 5


def test_progress_lines_and_bar():
    start = dt.datetime(2024, 1, 17, 16)
    lines = io.StringIO()
    p = CaseProgress("c", start, 900, 4, mode="lines", stream=lines, interval_s=0.0)
    for _ in range(4):
        p.update(900)  # mosaik's counter moves in ticks (seconds)
    p.close()
    text = lines.getvalue().splitlines()
    assert text[0].startswith("c: step 1/4 (25 %), simulated 2024-01-17 16:15")
    assert text[-1].startswith("c: 4/4 steps in") and text[-1].endswith("2024-01-17 17:00")
    bar = io.StringIO()
    p = CaseProgress("c", start, 900, 4, mode="bar", stream=bar)
    p.update(1800)
    p.close()
    assert "2/4 steps" in bar.getvalue() and "2024-01-17 16:30" in bar.getvalue()


def test_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["ev-grid-cosim"] == "scenarios.cli:main"


def test_check_builds_the_world_without_running_or_writing(tmp_path):
    out = tmp_path / "o"
    proc = cli("seed001_lv", "--check", "--out", str(out))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "conventional: set up in" in proc.stdout and "2 case(s) set up, nothing run" in proc.stdout
    assert not out.exists()


def test_check_reports_a_set_up_failure_exit_1(tmp_path):
    """A simulator that cannot be reached fails the set-up: no traceback, exit 1."""
    proc = cli("--check", "--out", str(tmp_path / "o"),
               "--set", 'simulators.pv={starter = "connect", addr = "127.0.0.1:1", start_timeout_s = 5}')
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert proc.stderr.startswith("check failed: case 'default': set-up failed in PV"), proc.stderr
    assert "Traceback" not in proc.stderr
