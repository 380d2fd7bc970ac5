"""Co-simulation throughput: steps per second and where the time goes.

    python bench/cosim_throughput.py [--evs 100 1000 5000] [--strategy uncoordinated] [--repeat 3]

Runs the whole world (grid, base load, EV fleet, scheduler, recorder; all in-process)
on CIGRE MV for 64 steps of 15 minutes with the seed 000 EV counts of Table I scaled
to the requested fleet size, and prints, per fleet size, steps/s and seconds per step
split into power flow, fleet, scheduler, recording, the other simulators (base load,
PV) and mosaik's own overhead (wall time minus the time spent inside simulators).
Each size runs ``--repeat`` times; the row is the run with the shortest world time
(timings on a shared machine vary by tens of percent; the fastest run is the one
least disturbed).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import tomllib
import types
from pathlib import Path

from scenarios import runner
from scenarios.config import parse_scenario

ROOT = Path(__file__).resolve().parents[1]
SEED000 = ROOT / "scenarios" / "seed000_mv.toml"
TABLE_I = {3: 68, 4: 106, 5: 178, 6: 134, 8: 144, 10: 116, 11: 81, 14: 51}

SPENT: dict[str, float] = collections.defaultdict(float)


def _timed(name: str, cls: type) -> type:
    """Subclass of a simulator class that adds its step/get_data time to SPENT[name]
    and its finalize time to SPENT[name + "_finalize"]."""

    def timed(method: str, key: str):
        inner = getattr(cls, method)

        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(self, *args, **kwargs)
            finally:
                SPENT[key] += time.perf_counter() - t0

        return wrapper

    return type(f"Timed{cls.__name__}", (cls,), {"step": timed("step", name), "get_data": timed("get_data", name),
                                                 "finalize": timed("finalize", name + "_finalize")})


def install_timed_simulators() -> None:
    """Point the runner's in-process simulators at timed subclasses."""
    import importlib

    module = types.ModuleType("_timed_simulators")
    for key, (sim_name, mod, cls_name) in list(runner.SIMULATORS.items()):
        cls = getattr(importlib.import_module(mod), cls_name)
        setattr(module, cls_name, _timed(key, cls))
        runner.SIMULATORS[key] = (sim_name, "_timed_simulators", cls_name)
    sys.modules["_timed_simulators"] = module


def scaled_counts(n_evs: int) -> dict[str, int]:
    """Table I counts scaled to ``n_evs`` in total (largest remainders)."""
    total = sum(TABLE_I.values())
    raw = {b: n * n_evs / total for b, n in TABLE_I.items()}
    counts = {b: int(v) for b, v in raw.items()}
    for b in sorted(raw, key=lambda b: raw[b] - counts[b], reverse=True)[: n_evs - sum(counts.values())]:
        counts[b] += 1
    return {str(b): n for b, n in counts.items()}


def run(n_evs: int, strategy: str, mode: str) -> dict:
    raw = tomllib.loads(SEED000.read_text())
    raw.pop("cases")
    raw["fleet"]["counts"] = scaled_counts(n_evs)
    raw["scheduler"].update(strategy=strategy, mode=mode)
    case = parse_scenario(raw, SEED000).cases[0]
    SPENT.clear()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = runner.run_case(case, Path(tmp), plots=False)
        wall = time.perf_counter() - t0
    steps = case.scenario.n_steps
    # The recorder's writer process may still be writing when the world's last step
    # ends; waiting for it (in finalize) counts as recording and as world time.
    drain = SPENT.pop("recorder_finalize", 0.0)
    SPENT["recorder"] += drain
    inside = sum(v for k, v in SPENT.items() if not k.endswith("_finalize"))
    world = result.summary["world_run_seconds"] + drain
    setup = wall - world
    return {
        "evs": n_evs, "steps": steps, "wall_s": wall, "world_s": world,
        "steps_per_s": steps / world,
        "grid_ms": 1e3 * SPENT["grid"] / steps,
        "fleet_ms": 1e3 * SPENT["fleet"] / steps,
        "scheduler_ms": 1e3 * SPENT["scheduler"] / steps,
        "recorder_ms": 1e3 * SPENT["recorder"] / steps,
        "other_ms": 1e3 * (SPENT["baseload"] + SPENT["pv"]) / steps,
        "mosaik_ms": 1e3 * max(world - inside, 0.0) / steps,
        "overhead_share": (max(world - inside, 0.0) + SPENT["recorder"]) / world,
        "setup_s": setup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evs", type=int, nargs="*", default=[100, 1000, 5000])
    parser.add_argument("--strategy", default="uncoordinated")
    parser.add_argument("--mode", default="receding")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    install_timed_simulators()
    rows = [min((run(n, args.strategy, args.mode) for _ in range(max(1, args.repeat))),
                key=lambda r: r["world_s"]) for n in args.evs]
    cols = ("evs", "steps_per_s", "grid_ms", "fleet_ms", "scheduler_ms", "recorder_ms", "other_ms",
            "mosaik_ms", "overhead_share", "world_s", "setup_s")
    print(f"CIGRE MV, {rows[0]['steps']} steps of 15 min, strategy {args.strategy} ({args.mode}); "
          "ms per step; overhead_share = (mosaik + recording) / world wall time")
    print(" | ".join(f"{c:>13s}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:13.3f}" if isinstance(r[c], float) else f"{r[c]:13d}" for c in cols))


if __name__ == "__main__":
    main()
