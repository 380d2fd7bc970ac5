"""mosaik's own cost per step in this project's world shape, with no-op simulators.

    python bench/mosaik_floor.py [--steps 64 256 1024]

Same topology as a study (grid, base load with 18 loads, PV, fleet and scheduler in
a same-time loop inside a group, recorder; time-based, hybrid and event-based
simulators as in :mod:`scenarios.runner`), but every simulator returns at once. The
time per step is what mosaik costs whatever the simulators do: the floor under the
"mosaik" column of ``bench/cosim_throughput.py``. Printed for stock mosaik and with
:mod:`adapters.mosaik_fixes` (stock mosaik's cost per step grows with the run length),
and with the fixes but the fleet/scheduler loop replaced by a one-step delay (what
the same-step loop costs).
"""

from __future__ import annotations

import argparse
import time

import mosaik
import mosaik_api_v3

from adapters import mosaik_fixes

ATTRS = ["x", "y", "records", "setpoints", "fleet_state"]


def _meta(kind: str, **model) -> dict:
    return {"api_version": "3.0", "type": kind,
            "models": {"M": {"public": True, "params": [], "attrs": ATTRS, "any_inputs": True, **model}}}


class TimeSim(mosaik_api_v3.Simulator):
    """Time-based (or hybrid) no-op: steps every ``step`` ticks, outputs 1.0."""

    def __init__(self, kind: str = "time-based", **model):
        super().__init__(_meta(kind, **model))
        self.step_size = 900
        self.last = None
        self.publish = True

    def init(self, sid, time_resolution=1.0, step=900):
        self.step_size = step
        return self.meta

    def create(self, num, model):
        return [{"eid": f"M{i}", "type": model} for i in range(num)]

    def step(self, time, inputs, max_advance):
        self.publish, self.last = time != self.last, time
        return time + self.step_size

    def get_data(self, outputs):
        return {eid: {a: 1.0 for a in attrs if a != "fleet_state" or self.publish}
                for eid, attrs in outputs.items()}


class FleetSim(TimeSim):
    """Hybrid like the fleet: ``setpoints`` trigger, ``fleet_state`` once per time."""

    def __init__(self):
        super().__init__("hybrid", trigger=["setpoints"], **{"non-persistent": ["fleet_state"]})


class EventSim(mosaik_api_v3.Simulator):
    """Event-based no-op like the scheduler and the recorder."""

    def __init__(self):
        super().__init__(_meta("event-based"))
        self.got = False

    def create(self, num, model):
        return [{"eid": f"M{i}", "type": model} for i in range(num)]

    def step(self, time, inputs, max_advance):
        self.got = bool(inputs)
        return None

    def get_data(self, outputs):
        return {eid: {a: 1.0 for a in attrs} for eid, attrs in outputs.items()} if self.got else {}


SIM_CONFIG = {name: {"python": f"{__name__}:{cls}"} for name, cls in
              [("Grid", "TimeSim"), ("BaseLoad", "TimeSim"), ("PV", "TimeSim"), ("Fleet", "FleetSim"),
               ("Scheduler", "EventSim"), ("Recorder", "EventSim")]}


def ms_per_step(n_steps: int, same_time_loop: bool = True) -> float:
    """Wall time of ``World.run`` per step [ms].

    ``same_time_loop=False`` replaces the fleet/scheduler loop by a one-step delay
    (setpoints apply a step late): what the issue's same-step loop costs mosaik.
    """
    with mosaik.World(SIM_CONFIG, cache=False, skip_greetings=True, configure_logging=False) as world:
        rec = world.start("Recorder").M()
        grid = world.start("Grid", step=900).M()
        base = world.start("BaseLoad", step=900).M.create(19)  # 18 loads and their parent
        pv = world.start("PV", step=900).M()
        if same_time_loop:
            with world.group():
                fleet = world.start("Fleet", step=900).M()
                sched = world.start("Scheduler").M()
            world.connect(sched, fleet, "setpoints", weak=True)
        else:
            fleet = world.start("Fleet", step=900).M()
            sched = world.start("Scheduler").M()
            world.connect(sched, fleet, "setpoints", time_shifted=900)
        for load in base[1:]:
            world.connect(load, grid, "x")
        world.connect(pv, grid, "x")
        world.connect(fleet, grid, "y")
        world.connect(fleet, sched, "fleet_state")
        world.connect(grid, sched, "x", time_shifted=900)
        for source in (grid, base[0], pv, fleet):
            world.connect(source, rec, "records")
        world.connect(sched, rec, "x")
        t0 = time.perf_counter()
        world.run(until=n_steps * 900, print_progress=False)
        return 1e3 * (time.perf_counter() - t0) / n_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    print("no-op simulators in the study's world shape; ms per step (fastest of "
          f"{args.repeat} runs)")
    print(f"{'steps':>6s} | {'stock mosaik':>12s} | {'with fixes':>10s} | {'fixes, no same-time loop':>24s}")
    for n in args.steps:
        times = {}
        for fixed, loop in ((False, True), (True, True), (True, False)):
            mosaik_fixes.uninstall()
            if fixed:
                mosaik_fixes.install()
            times[fixed, loop] = min(ms_per_step(n, loop) for _ in range(args.repeat))
        mosaik_fixes.uninstall()
        print(f"{n:6d} | {times[False, True]:12.3f} | {times[True, True]:10.3f} | {times[True, False]:24.3f}")

if __name__ == "__main__":
    main()
