"""The example home battery with an injected fault from a given step on (tests)."""

import os
import time as _time

import mosaik_api_v3

from examples.home_battery.battery import HomeBatterySimulator


class FaultyBattery(HomeBatterySimulator):
    """``init(fault=..., fault_at_s=...)``: from that step on, NaN power (``"nan"``), an
    exception (``"raise"``), no reply (``"hang"``) or the process exits (``"exit"``)."""

    def init(self, sid, time_resolution=1.0, step_s=900, fault="nan", fault_at_s=1800):
        self.fault, self.fault_at = fault, int(fault_at_s / time_resolution)
        return super().init(sid, time_resolution, step_s=step_s)

    def step(self, time, inputs, max_advance):
        self.now = time
        if self.fault == "raise" and time >= self.fault_at:
            raise RuntimeError("injected failure in the battery")
        if self.fault == "hang" and time >= self.fault_at:
            _time.sleep(600)
        if self.fault == "exit" and time >= self.fault_at:
            os._exit(3)  # the connection closes without a reply
        return super().step(time, inputs, max_advance)

    def get_data(self, outputs):
        data = super().get_data(outputs)
        if self.fault == "nan" and self.now >= self.fault_at:
            for values in data.values():
                if "p_kw" in values:
                    values["p_kw"] = float("nan")
        return data


if __name__ == "__main__":
    mosaik_api_v3.start_simulation(FaultyBattery(), "faulty battery")
