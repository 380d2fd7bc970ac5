"""Every shipped scenario runs end to end, shortened (few EVs, few steps)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from scenarios.config import parse_scenario
from scenarios.runner import run_scenario
from simulators.recorder.model import is_complete, read_table

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))


def shortened(path: Path) -> tuple[dict, int]:
    """The scenario cut to three steps and two EVs per bus, and its step count.

    A seed 003 fleet keeps its whole day: its EVs are the paper's commuters
    (arrivals 14-20 h, departures the next morning, eq. (19) energy), which no
    three-step window can hold, and the day runs in seconds.
    """
    raw = tomllib.loads(path.read_text())
    meta = raw.setdefault("scenario", {})
    step = meta.get("step_s", 900)
    start = meta.get("start", dt.datetime(2024, 5, 15, 16))
    if raw.get("fleet", {}).get("sampling") == "seed003":
        return raw, int((meta["end"] - start).total_seconds() // step)
    meta["end"] = start + dt.timedelta(seconds=3 * step)
    counts = raw.get("fleet", {}).get("counts", {})
    raw.setdefault("fleet", {})["counts"] = {b: min(n, 2) for b, n in counts.items()}
    if raw["fleet"].get("arrival", "gev") == "gev":
        raw["fleet"]["arrival"] = "fixed"  # so that some EVs are plugged within 3 steps
        raw["fleet"]["arrival_fixed_h"] = start.hour + start.minute / 60
    return raw, 3


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_runs(path, tmp_path):
    raw, n_steps = shortened(path)
    scenario = parse_scenario(raw, path)
    results = run_scenario(scenario, tmp_path, plots=False, echo=lambda s: None, jobs=1)
    assert len(results) == len(scenario.cases)
    for r in results:
        assert is_complete(r.out_dir)
        assert r.summary["recorded_steps"] == n_steps
        assert r.summary["fallback_steps"] == 0
        if not scenario.cases[0].fleet.counts:
            continue  # a grid-only study (simbench_mv_study_cases): no EV table
        ev = read_table(r.out_dir, "EV")
        assert ev["p_clipped_kw"].abs().max() < 1e-6  # every plan feasible for the EV model
    if len(scenario.cases) > 1:
        assert (tmp_path / "comparison.md").exists()
