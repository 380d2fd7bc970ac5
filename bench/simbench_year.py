"""SimBench grids as they ship: the co-simulation against pandapower's own time series,
and a whole year.

    python bench/simbench_year.py [--lv CODE] [--mv CODE] [--year lv|mv|both|none]

For one SimBench LV and one MV grid, without EVs, over the same week (the first
week of June 2016, 672 steps of 15 min): every load, sgen and storage unit on its
SimBench profile in the co-simulation (grid, base load, DER, fleet, scheduler,
recorder, all in-process, results streamed to disk), and pandapower's
``run_timeseries`` with simbench's ``get_absolute_values`` +
``apply_const_controllers`` (:mod:`adapters.simbench_reference`). Prints per grid
the largest voltage and line-loading difference between the two, steps/s of each
and their ratio, and the year (35 040 steps) extrapolated from the week.

``--year`` then runs a whole year (1 January to 30 December 2016, 35 040 steps) of
``scenarios/simbench_lv_year.toml`` (LV, its 24 EVs home every evening): ``lv``
its uncoordinated case, ``lv_smart`` its smart case with one day-ahead plan a day
(``day_ahead_daily``), and/or ``mv`` the same world on the MV grid without EVs.
Prints the measured wall time and the resident memory (this process and its
children: the recorder's writer) sampled every second, at 10 %, 25 %, 50 %, 75 %,
90 % and 100 % of the run (100 %: after the summary, which reads the tables back):
flat memory means the results stream to disk instead of piling up.

Default run: both weeks and the LV uncoordinated year (``--week none`` skips the
weeks; the uncoordinated LV year took 5.5 min on 42af837, docs/performance.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import threading
import time
import tomllib
from pathlib import Path

from adapters.networks import load_network
from adapters.simbench_reference import max_differences, no_ev_scenario, run_reference, simbench_row
from scenarios.config import parse_scenario
from scenarios.runner import run_case
from simulators.grid.naming import element_eids
from simulators.recorder.model import pivot

ROOT = Path(__file__).resolve().parents[1]
LV_SCENARIO = ROOT / "scenarios" / "simbench_lv_year.toml"
WEEK_START = "2016-06-01T00:00:00"
WEEK_STEPS = 7 * 96
YEAR_STEPS = 35040
RSS_AT = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def week(network: str) -> dict:
    """Co-simulation and run_timeseries over the same week; differences and speeds."""
    net = load_network(network)
    case = parse_scenario(no_ev_scenario(network, WEEK_START, WEEK_STEPS), ROOT / "bench.toml").cases[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_case(case, Path(tmp), plots=False)
        vm = pivot(Path(tmp), "Bus", "vm_pu")
        loading = pivot(Path(tmp), "Line", "loading_percent")
    ref = run_reference(network, simbench_row(net, WEEK_START.replace("T", " ")[:16]), WEEK_STEPS)
    bus_eid, line_eid = element_eids(net, "bus"), element_eids(net, "line")
    dv, dl = max_differences(vm[[bus_eid[int(b)] for b in ref.vm_pu.columns]].to_numpy(),
                             loading[[line_eid[int(i)] for i in ref.line_loading_percent.columns]].to_numpy(),
                             ref)
    cosim_s = result.summary["world_run_seconds"]
    return {"network": network, "buses": len(net.bus), "sgens": len(net.sgen), "storage": len(net.storage),
            "dv": dv, "dl": dl, "cosim_sps": WEEK_STEPS / cosim_s, "ref_sps": WEEK_STEPS / ref.run_s}


class MemorySampler:
    """Resident memory of this process and its children [MiB], sampled every second."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # noqa: BLE001 - a child may end between listing and reading
                pass
        return total / 2**20

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(1.0):
            self.samples.append((time.perf_counter() - t0, self._rss()))

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, fraction: float) -> float:
        """RSS at ``fraction`` of the sampled time [MiB]."""
        if not self.samples:
            return float("nan")
        t_end = self.samples[-1][0]
        return next(m for t, m in self.samples if t >= fraction * t_end)


def year(kind: str, mv_network: str) -> dict:
    """A whole year: the shipped LV year scenario's uncoordinated (``lv``) or smart
    day-ahead-daily (``lv_smart``) case, or MV without EVs."""
    start = dt.datetime(2016, 1, 1)
    end = start + dt.timedelta(minutes=15 * YEAR_STEPS)
    if kind in ("lv", "lv_smart"):
        raw = tomllib.loads(LV_SCENARIO.read_text())
        name = "uncoordinated" if kind == "lv" else "smart_day_ahead_daily"
        raw["cases"] = [c for c in raw["cases"] if c["name"] == name]
        raw["scenario"].update(start=start, end=end)
        source = LV_SCENARIO
    else:
        raw = no_ev_scenario(mv_network, start.isoformat(), YEAR_STEPS)
        source = ROOT / "bench.toml"
    case = parse_scenario(raw, source).cases[0]
    with tempfile.TemporaryDirectory() as tmp, MemorySampler() as mem:
        t0 = time.perf_counter()
        result = run_case(case, Path(tmp), plots=False)
        wall = time.perf_counter() - t0
        disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
    s = result.summary
    return {"network": case.grid.network, "case": case.name, "evs": len(case.fleet.counts), "wall_s": wall,
            "run_s": s["world_run_seconds"], "steps": s.get("recorded_steps"),
            "min_vm": s.get("min_voltage_pu"), "trafo": s.get("max_trafo_loading_percent"),
            "stays": s.get("n_stays"), "solve_s": s.get("solve_seconds"),
            "rss": [mem.at(f) for f in RSS_AT], "disk_mib": disk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lv", default="1-LV-rural2--0-sw", help="SimBench LV code")
    parser.add_argument("--mv", default="1-MV-rural--0-sw", help="SimBench MV code")
    parser.add_argument("--year", choices=("lv", "lv_smart", "lv_both", "mv", "both", "none"), default="lv")
    parser.add_argument("--week", choices=("both", "none"), default="both")
    args = parser.parse_args()
    lv, mv = f"simbench:{args.lv}", f"simbench:{args.mv}"

    print(f"week {WEEK_START[:10]} + 7 days, {WEEK_STEPS} steps of 15 min, no EVs; "
          f"co-simulation vs pandapower run_timeseries + simbench apply_const_controllers")
    print("| grid | buses | sgens | storage | max dV [pu] | max d loading [%] | co-sim steps/s "
          "| run_timeseries steps/s | ratio | year extrapolated (co-sim) | year extrapolated (run_timeseries) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for network in (lv, mv) if args.week == "both" else ():
        w = week(network)
        print(f"| {w['network']} | {w['buses']} | {w['sgens']} | {w['storage']} | {w['dv']:.1e} | {w['dl']:.1e} "
              f"| {w['cosim_sps']:.0f} | {w['ref_sps']:.1f} | {w['cosim_sps'] / w['ref_sps']:.1f} "
              f"| {YEAR_STEPS / w['cosim_sps'] / 60:.1f} min | {YEAR_STEPS / w['ref_sps'] / 60:.1f} min |",
              flush=True)
    kinds = {"lv": ["lv"], "lv_smart": ["lv_smart"], "lv_both": ["lv", "lv_smart"], "mv": ["mv"],
             "both": ["lv", "mv"], "none": []}[args.year]
    if kinds:
        print(f"\nwhole year: {YEAR_STEPS} steps of 15 min from 2016-01-01, results streamed to disk")
        print("| grid | case | EVs (stays) | steps recorded | wall time | world.run | solve time "
              "| RSS at 10/25/50/75/90/100 % [MiB] | results on disk [MiB] | min voltage [pu] | max trafo loading [%] |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        y = year(kind, mv)
        rss = " / ".join(f"{m:.0f}" for m in y["rss"])
        trafo = "-" if y["trafo"] is None else f"{y['trafo']:.1f}"
        print(f"| {y['network']} | {y['case']} | {y['evs']} ({y['stays'] or 0}) | {y['steps']} | {y['wall_s'] / 60:.1f} min "
              f"| {y['run_s'] / 60:.1f} min | {(y['solve_s'] or 0):.0f} s | {rss} | {y['disk_mib']:.0f} "
              f"| {y['min_vm']:.4f} | {trafo} |", flush=True)


if __name__ == "__main__":
    main()
