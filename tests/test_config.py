"""Scenario validation: every problem reported at once, before anything starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scenarios.config import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate(path):
    scenario = load_scenario(path)
    assert scenario.cases


def test_all_problems_listed_at_once(tmp_path):
    path = write(tmp_path, """
        [scenario]
        start = 2024-05-15T16:00:00
        end = 2024-05-16T08:00:00
        step_s = 7000
        [grid]
        network = "cigre_lv"
        vm_min_pu = -1.0
        [fleet]
        battery_kwh = -16.0
        efficiency = 1.5
        soc_target = 1.2
        counts = { R1 = 3, R99 = 2 }
        evs = [ { bus = "R11", arrival_h = 3.0, departure_h = 2.0 } ]
        [scheduler]
        strategy = "telepathy"
    """)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    for needle in ("scenario.step_s", "grid.vm_min_pu", "fleet.battery_kwh", "fleet.efficiency",
                   "fleet.soc_target", "scheduler.strategy", "R99", "departure_h"):
        assert needle in text, needle
    assert len(info.value.problems) >= 8
    # ranges are named
    assert "must be in (0, 1000]" in text
    assert "must be in (0, 1]" in text


def test_unknown_network_and_simbench_code(tmp_path):
    for net, needle in (("simbench:1-LV-nowhere--0-sw", "unknown SimBench code"),
                        ("atlantis", "unknown network"),
                        ("missing.json", "does not exist")):
        path = write(tmp_path, f"""
            [grid]
            network = "{net}"
        """)
        with pytest.raises(ScenarioError, match=needle):
            load_scenario(path)


def test_unknown_tables_and_fields(tmp_path):
    path = write(tmp_path, """
        [grid]
        netwrok = "cigre_lv"
        [flet]
        counts = {}
    """)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "grid.netwrok: unknown field" in str(info.value)
    assert "flet: unknown table" in str(info.value)


def test_strategy_needs_capable_chargers(tmp_path):
    path = write(tmp_path, """
        [fleet]
        counts = { R1 = 1 }
        [scheduler]
        strategy = "v2g_q"
    """)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "can_discharge" in str(info.value) and "can_reactive" in str(info.value)


def test_cases_override_and_names(tmp_path):
    path = write(tmp_path, """
        [scenario]
        end = 2024-05-16T08:00:00
        [fleet]
        counts = { R1 = 1 }
        can_discharge = true
        [[cases]]
        name = "a"
        [[cases]]
        name = "b"
        scheduler = { strategy = "v2g" }
        fleet = { soc_target = 0.8 }
    """)
    scenario = load_scenario(path)
    a, b = scenario.cases
    assert (a.scheduler.strategy, b.scheduler.strategy) == ("uncoordinated", "v2g")
    assert (a.fleet.soc_target, b.fleet.soc_target) == (1.0, 0.8)
    assert b.fleet.counts == {"R1": 1}


def test_flex_max_options_named_in_errors(tmp_path):
    """flex_max: negative C, unknown activation scenario, bad power factor: one error each."""
    text = (ROOT / "scenarios" / "default.toml").read_text().replace(
        'strategy = "uncoordinated"',
        'strategy = "flex_max"\nflex_c_down = -1.0\nflex_scenarios = ["down", "sideways"]\nev_power_factor = 1.5', 1)
    path = tmp_path / "flex.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    for name in ("scheduler.flex_c_down", "scheduler.flex_scenarios", "scheduler.ev_power_factor"):
        assert name in msg, msg
    ok = tmp_path / "ok.toml"
    ok.write_text((ROOT / "scenarios" / "default.toml").read_text().replace(
        'strategy = "uncoordinated"\nmode = "receding"', 'strategy = "flex_max"\nmode = "day_ahead"', 1))
    assert load_scenario(ok).cases[0].scheduler.strategy == "flex_max"


DEFAULT = ROOT / "scenarios" / "default.toml"


def problems_of(tmp_path, replace: tuple[str, str] | None = None, append: str = "") -> list[str]:
    """Problems of the default scenario with one line replaced and/or text appended."""
    text = DEFAULT.read_text()
    if replace:
        assert replace[0] in text, replace[0]
        text = text.replace(*replace, 1)
    path = tmp_path / "s.toml"
    path.write_text(text + append)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value.problems


@pytest.mark.faults
@pytest.mark.parametrize(("replace", "field", "needle"), [
    # fault 5 of docs/reliability.md: each passed validation and failed (or misled) later
    (('monitor_buses = "R"', 'monitor_buses = "ZZZ"'), "grid.monitor_buses", "first letters of its buses: 0, C, I, R"),
    (("end = 2024-01-18T08:00:00\n", ""), "scenario.end", "required field is missing"),
    (("end = 2024-01-18T08:00:00", "end = 2124-01-18T08:00:00"), "scenario.end", "at most 366 days"),
    (("end = 2024-01-18T08:00:00\nstep_s = 900", "end = 2024-12-31T16:00:00\nstep_s = 30"), "scenario.step_s",
     "at most 527040 steps per run (a year of 1-minute steps), got 1005120 steps of 30 s"),
    (("R1 = 50,", "R1 = 100000000000000000,"), "fleet.counts.R1", "integer in [0, 100000]"),
    (("R1 = 50,", "R1 = 99990,"), "fleet.counts", "at most 100000 EVs per case"),
    (('strategy = "uncoordinated"', 'strategy = "uncoordinated"\nsolver = "gurobi"'), "scheduler.solver",
     "must be one of 'auto', 'piqp', 'clarabel', 'highs'"),
    (('strategy = "uncoordinated"', 'strategy = "uncoordinated"\ncone = "soc"\nsolver = "piqp"'),
     "scheduler.solver", "needs 'clarabel'"),
    (('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"'), "scenario.timezone", "IANA time zone"),
])
def test_validation_holes_are_closed(tmp_path, replace, field, needle):
    problems = problems_of(tmp_path, replace)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{field}:") and needle in problems[0], problems[0]


@pytest.mark.faults
def test_ev_rows_bound_is_the_product_of_evs_and_steps(tmp_path):
    """5 048 EVs and 100 512 steps are each inside their bounds; their product is not."""
    text = DEFAULT.read_text().replace("end = 2024-01-18T08:00:00", "end = 2024-12-31T16:00:00", 1)
    text = text.replace("step_s = 900", "step_s = 300", 1).replace("R1 = 50,", "R1 = 5000,", 1)
    path = tmp_path / "rows.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    # 2024-01-17T16:00 to 2024-12-31T16:00: 349 days = 100 512 five-minute steps
    assert info.value.problems == [
        "fleet.counts: 5048 EVs x 100512 steps = 5.07e+08 EV rows, at most 2e+08 (memory of the summary, "
        "~100 B a row); shorten the horizon or use fewer EVs"]


@pytest.mark.faults
def test_solver_not_installed(tmp_path, monkeypatch):
    """A known solver whose package is missing is named with the installed ones."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "clarabel" else real(name, *a))
    problems = problems_of(tmp_path, ('strategy = "uncoordinated"', 'strategy = "uncoordinated"\nsolver = "clarabel"'))
    assert problems == ["scheduler.solver: 'clarabel' is not installed (pip install clarabel); "
                        "installed: auto, piqp, highs"]
