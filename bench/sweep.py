"""Benchmark of sweeps on Dask: 48 small points serially and on a 2-worker LocalCluster.

Run ``python bench/sweep.py`` (``--help`` for options). The points are real
co-simulations, small: CIGRE LV with the residential feeder's households (seed 001
Table I, 98 at 100 %) at 25/50/75/100 % penetration, uncoordinated and smart
(receding horizon), 6 seeds, 1 h in 15-min steps, nominal base load.

Prints:

- wall time of the 48 points run one after the other in this process (``serial``,
  after one untimed warm-up point: imports and network caches are warm) and on a
  LocalCluster of ``--workers`` processes (after a warm-up that imports the project
  and builds the network in every worker; the cluster's start-up is shown apart);
- the speed-up serial / cluster (target: >= 1.7 on 2 cores);
- the engine's overhead per point: ``(workers x cluster wall - sum of the points'
  own run time in the workers) / points`` (target: < 0.5 s); it includes the
  tail where one worker idles while the other finishes the last point;
- whether the merged tables are identical (timing columns aside);
- the machine's own ceiling: the speed-up of the same pure-Python loop run in
  ``--workers`` processes at once over one process (a shared or throttled virtual
  machine gives less than its core count; the sweep cannot beat this).

The machine may be shared: run it when the machine is otherwise idle, or read the
ratio (both runs are side by side in one invocation) rather than the absolute times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from scenarios.config import parse_scenario
from scenarios.sweep import TIMING_KEYS, dask_client, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def scenario_raw(n_seeds: int) -> dict:
    """48 points (4 penetrations x 2 strategies x ``n_seeds`` = 6 seeds)."""
    return {
        "scenario": {"name": "bench_sweep", "seed": 1, "start": dt.datetime(2024, 1, 17, 17),
                     "end": dt.datetime(2024, 1, 17, 18), "step_s": 900},
        "grid": {"network": "cigre_lv", "monitor_buses": "R"},
        "baseload": {"source": "nominal", "scale": 0.6},
        "fleet": {"counts": {"R1": 50, "R11": 3, "R15": 12, "R16": 14, "R17": 8, "R18": 11},
                  "arrival": "fixed", "arrival_fixed_h": 17.0},
        "sweep": {"axes": {"penetration_percent": [25, 50, 75, 100], "strategy": ["uncoordinated", "smart"],
                           "seed": {"start": 1, "stop": n_seeds, "step": 1}}},
    }


def _warm() -> None:
    """Imports and the network cache of one worker (excluded from the timed sweep)."""
    import scenarios.runner  # noqa: F401
    from adapters.networks import load_network

    load_network("cigre_lv")


def _spin(n: int) -> float:
    """CPU seconds of a pure-Python loop of ``n`` additions (wall time, s)."""
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - t0


def machine_ceiling(workers: int, n: int = 20_000_000) -> float:
    """Speed-up of ``workers`` copies of one loop in parallel over one copy alone."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_spin, [1000] * workers)
        t0 = time.perf_counter()
        pool.map(_spin, [n])
        one_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.map(_spin, [n] * workers, chunksize=1)
        all_s = time.perf_counter() - t0
    return workers * one_s / all_s


def _comparable(table):
    return table.drop(columns=[c for c in (*TIMING_KEYS, "resumed") if c in table]).sort_values("point") \
        .reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds per point (8 points each; default 6 = 48)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    args = parser.parse_args(argv)
    scenario = parse_scenario(scenario_raw(args.seeds), ROOT / "scenarios" / "bench_sweep.toml")
    quiet = dict(echo=lambda s: None, progress=False, plots=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = parse_scenario({**scenario_raw(1), "sweep": {"axes": {"seed": [99]}}}, scenario.source)
        run_sweep(warm, tmp / "warm", serial=True, **quiet)
        t0 = time.perf_counter()
        serial = run_sweep(scenario, tmp / "serial", serial=True, **quiet)
        serial_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        with dask_client(workers=args.workers) as client:
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.run(_warm)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            cluster = run_sweep(scenario, tmp / "cluster", client=client, **quiet)
            cluster_s = time.perf_counter() - t0
    ceiling = machine_ceiling(args.workers)
    n = len(serial.table)
    busy_s = float(cluster.table["exec_seconds"].sum())
    overhead = (args.workers * cluster_s - busy_s) / n
    same = _comparable(serial.table).equals(_comparable(cluster.table))
    rows = [
        ("points", f"{n}", ""),
        ("serial wall [s]", f"{serial_s:.1f}", f"{serial_s / n:.2f} s/point"),
        (f"cluster ({args.workers} workers) wall [s]", f"{cluster_s:.1f}", f"{cluster_s / n:.2f} s/point"),
        ("cluster start-up + warm-up [s]", f"{start_s:.1f} + {warm_s:.1f}", "once per sweep, not in the wall above"),
        ("speed-up serial / cluster", f"{serial_s / cluster_s:.2f}x", "target >= 1.7x"),
        ("speed-up incl. start-up + warm-up", f"{serial_s / (cluster_s + start_s + warm_s):.2f}x", ""),
        ("points' own run time in workers [s]", f"{busy_s:.1f}", f"serial: {serial.table['exec_seconds'].sum():.1f}"),
        ("engine overhead per point [s]", f"{overhead:.3f}", "target < 0.5 s"),
        (f"machine ceiling ({args.workers} loops at once)", f"{ceiling:.2f}x",
         f"sweep reaches {serial_s / cluster_s / ceiling:.0%} of it"),
        ("failed points (serial, cluster)", f"{serial.n_failed}, {cluster.n_failed}", ""),
        ("tables identical (timing aside)", "yes" if same else "NO", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  value     note")
    for name, value, note in rows:
        print(f"{name:{width}}  {value:9} {note}")
    return 0 if same and not (serial.n_failed or cluster.n_failed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
