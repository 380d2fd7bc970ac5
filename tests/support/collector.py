"""An event-based mosaik sink for tests: stores every input it receives."""

import mosaik_api_v3


class Collector(mosaik_api_v3.Simulator):
    """Stores ``(entity id, attr) -> {time: value}`` in the class attribute ``store``
    (entity ids without the simulator prefix)."""

    store: dict = {}

    def __init__(self):
        super().__init__({"api_version": "3.0", "type": "event-based",
                          "models": {"Sink": {"public": True, "params": [], "attrs": [],
                                              "any_inputs": True}}})

    def create(self, num, model):
        return [{"eid": f"Sink-{i}", "type": model} for i in range(num)]

    def step(self, time, inputs, max_advance):
        for attrs in inputs.values():
            for attr, src in attrs.items():
                for full_id, value in src.items():
                    Collector.store.setdefault((full_id.split(".", 1)[1], attr), {})[time] = value
        return None

    def get_data(self, outputs):
        return {}
