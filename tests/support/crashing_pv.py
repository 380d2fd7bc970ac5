"""A PV simulator that crashes in its third step (end-to-end failure tests)."""

import mosaik_api_v3

from simulators.pv.mosaik_api import PVSimulator


class CrashingPV(PVSimulator):
    def step(self, time, inputs, max_advance):
        if time >= 2 * self.step_ticks:
            raise RuntimeError("injected failure in the PV simulator")
        return super().step(time, inputs, max_advance)


if __name__ == "__main__":
    mosaik_api_v3.start_simulation(CrashingPV(), "crashing PV")
