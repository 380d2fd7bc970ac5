"""mosaik adapter for :class:`simulators.recorder.model.StepWriter`.

Every input arriving at the ``Recorder`` entity is written at the step it arrives,
grouped into one table per entity type. The table is the part of the source entity
id before its first ``-`` (``EV-17`` -> ``EV``, ``Bus-R11`` -> ``Bus``), which is how
all our simulators name their entities.

An input named ``records`` carries whole tables at once (``{table: {"entity": [...],
attr: [...]}}``, e.g. the fleet's ``Fleet.records``); they are written as they are.

``writer="process"`` (the default) converts and writes in a child process
(:mod:`simulators.recorder.writer_process`), off the co-simulation's critical path;
``writer="inline"`` writes in the simulator's own step.
"""

from __future__ import annotations

from pathlib import Path

import mosaik_api_v3

from simulators.recorder.model import StepWriter
from simulators.recorder.writer_process import WriterProcess

#: Where a Recorder converts and writes its steps (``create`` parameter ``writer``).
WRITERS = ("process", "inline")

META = {
    "api_version": "3.0",
    "type": "event-based",
    "models": {
        "Recorder": {
            "public": True,
            "any_inputs": True,
            "params": ["out_dir", "metadata", "writer"],
            "attrs": [],
        },
    },
}


def table_of(full_id: str) -> tuple[str, str]:
    """(table, entity id) of a mosaik full id ``"Sim-0.EV-17"``."""
    eid = full_id.split(".", 1)[1] if "." in full_id else full_id
    return eid.split("-", 1)[0], eid


class RecorderSimulator(mosaik_api_v3.Simulator):
    """Event-based sink: stepped whenever inputs arrive, writes them immediately."""

    def __init__(self) -> None:
        super().__init__(META)
        self.writer: StepWriter | WriterProcess | None = None
        self.time_resolution = 1.0

    def init(self, sid, time_resolution=1.0, **sim_params):
        if time_resolution <= 0:
            raise ValueError(f"time_resolution must be > 0 s, got {time_resolution}")
        self.time_resolution = float(time_resolution)
        return self.meta

    def create(self, num, model, out_dir, metadata=None, writer="process"):
        if num != 1 or self.writer is not None:
            raise ValueError("exactly one Recorder entity per simulator")
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS}, got {writer!r}")
        self.writer = StepWriter(Path(out_dir))  # removes earlier results
        self.writer.write_metadata(metadata or {})
        if writer == "process":
            self.writer = WriterProcess(Path(out_dir))
        return [{"eid": "Recorder", "type": model}]

    def step(self, time, inputs, max_advance):
        by_table: dict[str, dict[str, dict[str, object]]] = {}
        time_s = int(round(time * self.time_resolution))
        for attrs in inputs.values():
            for attr, sources in attrs.items():
                if attr == "records":
                    for value in sources.values():
                        if value is None:  # the grid after a non-converged power flow: no values
                            continue
                        for table, columns in value.items():
                            self.writer.append_columns(time_s, table, columns)
                    continue
                for src, value in sources.items():
                    table, eid = table_of(src)
                    by_table.setdefault(table, {}).setdefault(eid, {})[attr] = value
        for table, rows in by_table.items():
            self.writer.append(time_s, table, rows)
        self.writer.end_step()
        return None

    def get_data(self, outputs):
        return {}

    def finalize(self):
        # Close the streams; the runner converts them to Parquet and writes the
        # completion marker once the whole run (and its summary) is done.
        if self.writer is not None:
            self.writer.close()


def main() -> None:
    """Start the recorder as an external process (mosaik ``cmd``/``connect``)."""
    mosaik_api_v3.start_simulation(RecorderSimulator(), "ev-grid-cosim recorder")


if __name__ == "__main__":
    main()
