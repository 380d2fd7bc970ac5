"""A time-based mosaik source for tests: outputs ``value = time`` every ``step`` ticks."""

import mosaik_api_v3


class Ticker(mosaik_api_v3.Simulator):
    def __init__(self):
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"Tick": {"public": True, "params": [], "attrs": ["value"]}}})
        self.step_size = 1
        self.time = 0

    def init(self, sid, time_resolution=1.0, step=1):
        self.step_size = step
        return self.meta

    def create(self, num, model):
        return [{"eid": f"Tick-{i}", "type": model} for i in range(num)]

    def step(self, time, inputs, max_advance):
        self.time = time
        return time + self.step_size

    def get_data(self, outputs):
        return {eid: {"value": self.time} for eid in outputs}


if __name__ == "__main__":
    mosaik_api_v3.start_simulation(Ticker(), "ticker")
