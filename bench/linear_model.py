"""Benchmark: linearised grid model (sensitivity coefficients) against full AC power flow.

Run with ``python bench/linear_model.py`` (``--samples``, ``--seed``, ``--grids``).

For each grid, the coefficients are computed once at an evening operating point (loads
at the network's values, DER off), then random EV charging is added: at every bus a
random number of EVs, uniform in 0..N_b, each drawing 3.6 kVA. N_b comes from the
papers where they give it (seed 000, Table I for CIGRE MV: 878 EVs, up to 178 per
node; seed 001, Table I for CIGRE LV: 98 EVs, 50 at node R1) and otherwise from seed
000's rule (1.4 EVs per 6 kVA of load apparent power at the bus). Two cases:

``P``
    chargers at unity power factor (3.6 kW each);
``P+Q``
    chargers supporting the voltage: per bus and sample a random cos(phi) in
    [0.6, 1], P = 3.6 cos(phi) kW, reactive *injection* 3.6 sin(phi) kvar
    (q_kvar < 0 in load convention).

The first-order prediction ``sens.predict`` is compared with ``pandapower.runpp``:
voltage magnitude error [pu]; line current error relative to the AC current (lines
loaded >= 10 % of ampacity) for the linearised magnitude ``|I|`` and for the "cone"
current ``sqrt(P_lin^2 + Q_lin^2) / (sqrt(3) vm_from vn)`` from the linearised
from-end flows, with ``vm_from`` the operating-point value ``vm_from0`` (``cone``) or
the linearised one (``cone v``); error in % of ampacity over all lines; substation transformer
apparent power error relative to the AC value. ``t_coef`` is the time to compute all
coefficients from a solved network (median of 5), ``t_meas`` from measured voltages
(builds pandapower's internal model without a power flow).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandapower as pp

from adapters.networks import load_network
from simulators.grid.sensitivity import compute_sensitivities

EV_KVA = 3.6
SEED000_EVS = {3: 68, 4: 106, 5: 178, 6: 134, 8: 144, 10: 116, 11: 81, 14: 51}  # bus: EVs
SEED001_EVS = {"R1": 50, "R11": 3, "R15": 12, "R16": 14, "R17": 8, "R18": 11}
GRIDS = (
    "cigre_lv",
    "cigre_mv",
    "simbench:1-LV-rural1--0-sw",
    "simbench:1-MV-rural--0-sw",
    "simbench:1-MV-urban--0-sw",
)


def ev_capacity(name: str, net, bus_ids: np.ndarray) -> np.ndarray:
    """Maximum number of EVs per bus (``bus_ids`` order)."""
    if name == "cigre_mv":
        return np.array([SEED000_EVS.get(int(b), 0) for b in bus_ids])
    if name == "cigre_lv":
        by_name = {str(n).removeprefix("Bus "): i for i, n in net.bus.name.items()}
        cap = {by_name[node]: n for node, n in SEED001_EVS.items()}
        return np.array([cap.get(int(b), 0) for b in bus_ids])
    load = net.load[net.load.in_service]
    s_kva = 1e3 * np.hypot(load.p_mw, load.q_mvar).groupby(load.bus).sum()
    return np.round(1.4 * s_kva.reindex(bus_ids, fill_value=0.0).to_numpy() / 6.0).astype(int)


def _ac(net, s):
    vn_kv = net.bus.vn_kv.loc[net.line.from_bus.loc[s.line_ids]].to_numpy()
    return (
        net.res_bus.vm_pu.loc[s.bus_ids].to_numpy(),
        net.res_line.i_from_ka.loc[s.line_ids].to_numpy(),
        1e3 * np.hypot(net.res_trafo.p_hv_mw, net.res_trafo.q_hv_mvar)
        .loc[s.trafo_ids].to_numpy(),
        vn_kv,
    )


def run_grid(name: str, samples: int, rng: np.random.Generator) -> list[dict]:
    net = load_network(name)
    net.sgen["scaling"] = 0.0  # evening: no PV
    pp.runpp(net)
    t_coef = []
    for _ in range(5):
        t0 = time.perf_counter()
        s = compute_sensitivities(net)
        t_coef.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    compute_sensitivities(net, vm_pu=net.res_bus.vm_pu.to_dict(),
                          va_degree=net.res_bus.va_degree.to_dict())
    t_meas = time.perf_counter() - t0

    cap = ev_capacity(name, net, s.bus_ids)
    col = {int(b): j for j, b in enumerate(s.bus_ids)}
    from_col = np.array([col.get(int(b), -1) for b in net.line.from_bus.loc[s.line_ids]])
    extra = [pp.create_load(net, int(b), p_mw=0.0, q_mvar=0.0, name="EVs") for b in s.bus_ids]
    rows = []
    for case in ("P", "P+Q"):
        keys = ("dv", "i_lin", "i_cone", "i_cone_v", "i_amp", "i_amp_cone", "s_t", "vmin", "ev_kw")
        err = {k: [] for k in keys}
        for _ in range(samples):
            n_ev = rng.integers(0, cap + 1)
            if case == "P":
                dp, dq = EV_KVA * n_ev, np.zeros(n_ev.size)
            else:
                cos_phi = rng.uniform(0.6, 1.0, size=n_ev.size)
                dp = EV_KVA * n_ev * cos_phi
                dq = -EV_KVA * n_ev * np.sqrt(1.0 - cos_phi**2)
            net.load.loc[extra, "p_mw"] = dp / 1e3
            net.load.loc[extra, "q_mvar"] = dq / 1e3
            pp.runpp(net, init="results")
            vm, i_ka, st_kva, vn_kv = _ac(net, s)
            lin = s.predict(s.p0_kw + dp, s.q0_kvar + dq)
            s_line = np.hypot(lin.line_p_kw, lin.line_q_kvar)
            i_cone = s_line / (np.sqrt(3) * s.vm_from0_pu * vn_kv) / 1e3
            vm_from = np.where(from_col >= 0, lin.vm_pu[np.maximum(from_col, 0)], s.vm_from0_pu)
            i_cone_v = s_line / (np.sqrt(3) * vm_from * vn_kv) / 1e3
            loaded = i_ka >= 0.1 * s.i_max_ka
            err["dv"].append(np.abs(lin.vm_pu - vm))
            err["i_lin"].append(np.abs(lin.i_ka - i_ka)[loaded] / i_ka[loaded])
            err["i_cone"].append(np.abs(i_cone - i_ka)[loaded] / i_ka[loaded])
            err["i_cone_v"].append(np.abs(i_cone_v - i_ka)[loaded] / i_ka[loaded])
            err["i_amp"].append(100 * np.abs(lin.i_ka - i_ka) / s.i_max_ka)
            err["i_amp_cone"].append(100 * np.abs(i_cone - i_ka) / s.i_max_ka)
            st_lin = np.hypot(lin.trafo_p_kw, lin.trafo_q_kvar)
            err["s_t"].append(np.abs(st_lin - st_kva) / st_kva)
            err["vmin"].append(net.res_bus.vm_pu.min())
            err["ev_kw"].append(dp.sum())
        cat = {k: np.concatenate([np.atleast_1d(x) for x in v]) for k, v in err.items()}

        def mx(k):
            return float(cat[k].max()) if cat[k].size else float("nan")

        rows.append({
            "grid": name.removeprefix("simbench:"),
            "n": s.bus_ids.size,
            "case": case,
            "ev_kw": float(np.mean(cat["ev_kw"])),
            "vmin": float(cat["vmin"].min()),
            "dv_max": mx("dv"),
            "dv_mean": float(cat["dv"].mean()),
            "i_lin": mx("i_lin"),
            "i_cone": mx("i_cone"),
            "i_cone_v": mx("i_cone_v"),
            "i_amp": mx("i_amp"),
            "i_amp_cone": mx("i_amp_cone"),
            "s_t": mx("s_t"),
            "t_coef_ms": 1e3 * float(np.median(t_coef)),
            "t_meas_ms": 1e3 * t_meas,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'grid':<20} {'n':>4} {'case':<4} {'EV kW':>7} {'AC vmin':>7} "
            f"{'|dv|max':>8} {'|dv|mean':>8} {'I lin':>6} {'I cone':>6} {'cone v':>6} "
            f"{'I %amp':>6} "
            f"{'cone%amp':>8} {'S trafo':>7} {'t_coef':>8} {'t_meas':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['grid']:<20} {r['n']:>4} {r['case']:<4} {r['ev_kw']:>7.0f} {r['vmin']:>7.3f} "
            f"{r['dv_max']:>8.4f} {r['dv_mean']:>8.5f} {100 * r['i_lin']:>5.1f}% "
            f"{100 * r['i_cone']:>5.1f}% {100 * r['i_cone_v']:>5.1f}% {r['i_amp']:>6.1f} "
            f"{r['i_amp_cone']:>8.1f} "
            f"{100 * r['s_t']:>6.2f}% {r['t_coef_ms']:>6.1f}ms {r['t_meas_ms']:>6.1f}ms"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=25,
                        help="random EV draws per grid and case")
    parser.add_argument("--seed", type=int, default=20130601)
    parser.add_argument("--grids", nargs="*", default=list(GRIDS))
    args = parser.parse_args(argv)
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name in args.grids:
        rows += run_grid(name, args.samples, rng)
    print(f"linear model vs AC power flow: {args.samples} random EV draws per grid and case, "
          f"seed {args.seed}")
    print(format_table(rows))
    print("|dv| [pu]. I lin / I cone / cone v: max relative current error over lines >= 10 % "
          "loaded, for the linearised |I| / the cone on linearised P, Q divided by vm_from0 / "
          "the same divided by the linearised vm_from. I %amp, cone%amp: max error in % of "
          "ampacity over all lines (|I|, cone at vm_from0). S trafo: max relative |S| error "
          "of the substation transformers.")


if __name__ == "__main__":
    main()
