"""mosaik adapter for :class:`simulators.dso.model.DSOModel` (event-based).

Entity ``DSO`` (one per simulator):

- inputs ``bus_vm_pu`` (dict bus -> pu), ``max_trafo_loading_percent``,
  ``max_trafo_p_hv_kw`` (sign: flow direction for the congestion policy),
  ``max_line_loading_percent`` (from the ``Grid`` entity, same step: the grid
  has just solved the step's power flow) and ``flex_offer`` (from the
  ``Scheduler``: :meth:`FlexOffer.to_dict`);
- outputs ``requests`` (list of :meth:`ActivationRequest.to_dict`, connect it to
  the scheduler with ``time_shifted`` by one step and ``initial_data={"requests":
  []}``: the scheduler plans the next step with it), ``n_requests`` (issued so
  far) and ``records`` (``{"Request": columns}`` of the requests issued this
  step, for the recorder).
"""

from __future__ import annotations

import mosaik_api_v3

from simulators.dso.model import (
    ActivationRequest,
    CongestionPolicy,
    DSOModel,
    FlexOffer,
    GridMeasurement,
    VoltagePolicy,
)

META = {
    "api_version": "3.0",
    "type": "event-based",
    "models": {
        "DSO": {
            "public": True,
            "params": ["scheduled", "voltage", "congestion", "lead_s", "allow_beyond_offer"],
            "attrs": ["bus_vm_pu", "max_trafo_loading_percent", "max_line_loading_percent", "max_trafo_p_hv_kw", "flex_offer",
                      "requests", "n_requests", "records"],
        },
    },
}

REQUEST_COLUMNS = ("request_id", "direction", "p_kw", "start_s", "end_s", "group", "reason", "offered_kw")


class DSOSimulator(mosaik_api_v3.Simulator):
    """Thin wrapper: measurements and offer in, :meth:`DSOModel.step`, requests out."""

    def __init__(self) -> None:
        super().__init__(META)
        self.model: DSOModel | None = None
        self.time_resolution = 1.0
        self.step_s = 0.0
        self._out: dict = {}
        self._last_time = None

    def init(self, sid, time_resolution=1.0, step_size=900, **sim_params):
        if time_resolution <= 0 or step_size <= 0:
            raise ValueError(f"time_resolution and step_size must be > 0, got {time_resolution}, {step_size}")
        self.time_resolution = float(time_resolution)
        self.step_s = float(step_size)
        return self.meta

    def create(self, num, model, scheduled=(), voltage=None, congestion=None, lead_s=None,
               allow_beyond_offer=False):
        if num != 1 or self.model is not None:
            raise ValueError("exactly one DSO entity per simulator")
        vpol = None
        if voltage:
            v = dict(voltage)
            v["buses"] = tuple(int(b) for b in v["buses"])
            v["group_buses"] = tuple(int(b) for b in v.get("group_buses", ()))
            v["sensitivity_pu_per_kw"] = {int(b): float(s) for b, s in v["sensitivity_pu_per_kw"].items()}
            vpol = VoltagePolicy(**v)
        cpol = None
        if congestion:
            c = dict(congestion)
            c["group_buses"] = tuple(int(b) for b in c.get("group_buses", ()))
            cpol = CongestionPolicy(**c)
        self.model = DSOModel(self.step_s, [ActivationRequest.from_dict(r) for r in scheduled], vpol, cpol,
                              lead_s=lead_s, allow_beyond_offer=allow_beyond_offer)
        return [{"eid": "DSO", "type": model}]

    def step(self, time, inputs, max_advance):
        data = inputs.get("DSO", {})
        t_s = time * self.time_resolution
        self._out = {}
        if time == self._last_time:
            return None  # one decision per time (a same-time re-trigger changes nothing)
        self._last_time = time
        vm = _single(data.get("bus_vm_pu"))
        measurement = None
        if vm:
            measurement = GridMeasurement(
                t_s, {int(b): float(x) for b, x in vm.items() if x is not None},
                _single(data.get("max_trafo_loading_percent")), _single(data.get("max_line_loading_percent")),
                _single(data.get("max_trafo_p_hv_kw")))
        raw = _single(data.get("flex_offer"))
        offer = FlexOffer.from_dict(raw) if raw else None
        reqs = self.model.step(t_s, measurement, offer)
        rows = [r.to_dict() for r in reqs]
        # every attribute every step: mosaik would otherwise hand the recorder the
        # last value again (the recorder writes what it receives)
        self._out = {"requests": rows, "n_requests": len(self.model.issued), "records": {}}
        if rows:
            cols = {"entity": [r["request_id"] for r in rows]}
            for c in REQUEST_COLUMNS[1:]:
                cols[c] = [r[c] for r in rows]
            self._out["records"] = {"Request": cols}
        return None

    def get_data(self, outputs):
        return {"DSO": {a: self._out[a] for a in outputs.get("DSO", []) if a in self._out}}


def _single(values):
    if not values:
        return None
    return next(iter(values.values()))


def main() -> None:
    """Start the DSO as an external process (mosaik ``cmd``/``connect``)."""
    mosaik_api_v3.start_simulation(DSOSimulator(), "ev-grid-cosim DSO")


if __name__ == "__main__":
    main()
