"""Grid networks from the outside world: pandapower builders, SimBench, JSON files.

A network is named by one string, the ``network`` field of a scenario:

``cigre_lv``
    CIGRE European LV benchmark (``pandapower.networks.create_cigre_network_lv``).
``cigre_mv``
    CIGRE European MV benchmark without DER
    (``pandapower.networks.create_cigre_network_mv(with_der=False)``).
``suburban_lv``
    Seed 003's suburban LV stand-in (:func:`create_suburban_lv`): 61 nodes, three
    radial feeders, 11/0.4 kV 315 kVA Dyn11 transformer.
``simbench:<code>``
    Any SimBench code, e.g. ``simbench:1-LV-rural1--0-sw``; loaded offline from the
    ``simbench`` package, with its load and generation profiles in ``net.profiles``.
``<path>.json``
    A pandapower network saved with ``pandapower.to_json``.

SimBench study cases
    ``load_network("simbench:<code>", study_case="hL")`` applies one of SimBench's
    worst-case snapshots (:data:`SIMBENCH_STUDY_CASES`: high load ``hL``, n-1
    ``n1``, high wind ``hW``, high PV ``hPV``, low load with wind ``lW`` / with PV
    ``lPV``) to the network's static values with simbench's own
    ``get_absolute_values(net, profiles_instead_of_study_cases=False)``: every
    load's P and Q, every sgen's P (by its type: wind, PV, other) and the slack
    voltage are set to that case's values (scaled per voltage level as SimBench
    defines them in ``net.loadcases``). Storage units keep their values (SimBench
    defines no study-case factor for them).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandapower as pp
import pandapower.networks as pn

BUILTIN_NETWORKS = ("cigre_lv", "cigre_mv", "suburban_lv")
SIMBENCH_PREFIX = "simbench:"
SIMBENCH_STUDY_CASES = ("hL", "n1", "hW", "hPV", "lW", "lPV")
"""SimBench's study cases (``StudyCases.csv``; the same names at every voltage level)."""


class UnknownNetworkError(ValueError):
    """The network name is neither a builder, a SimBench code nor a JSON file."""


def simbench_codes() -> tuple[str, ...]:
    """All SimBench codes the installed ``simbench`` package knows."""
    import simbench

    return tuple(simbench.collect_all_simbench_codes())


def check_study_case(name: str, study_case: str | None) -> str | None:
    """Problem with asking ``study_case`` of network ``name``, or None (cheap)."""
    if not study_case:
        return None
    if not name.startswith(SIMBENCH_PREFIX):
        return f"study case {study_case!r} needs a SimBench network ('{SIMBENCH_PREFIX}<code>'), got {name!r}"
    if study_case not in SIMBENCH_STUDY_CASES:
        return f"unknown SimBench study case {study_case!r}: allowed are {', '.join(SIMBENCH_STUDY_CASES)}"
    return None


def simbench_scenario(name: str) -> int | None:
    """SimBench scenario (0 today, 1 and 2 future) of a ``simbench:<code>`` name, else None."""
    if not name.startswith(SIMBENCH_PREFIX):
        return None
    import simbench

    return int(simbench.get_parameters_from_simbench_code(name[len(SIMBENCH_PREFIX):])[5])


def apply_study_case(net: pp.pandapowerNet, study_case: str) -> None:
    """Set ``net``'s loads, sgens and slack voltage to a SimBench study case, in place.

    Uses ``simbench.get_absolute_values(net, False)`` (module docstring).

    Raises
    ------
    UnknownNetworkError
        If the network has no such study case in ``net.loadcases``.
    """
    import simbench

    cases = getattr(net, "loadcases", None)
    if cases is None or study_case not in getattr(cases, "index", ()):
        have = [] if cases is None else list(cases.index)
        raise UnknownNetworkError(f"the network has no SimBench study case {study_case!r} (has {have})")
    values = simbench.get_absolute_values(net, profiles_instead_of_study_cases=False)
    for (element, column), frame in values.items():
        if len(frame.columns):
            net[element].loc[frame.columns, column] = frame.loc[study_case].to_numpy(dtype=float)


def check_network_name(name: str, base_dir: Path | None = None) -> str | None:
    """Return a problem description for ``name``, or None when it can be loaded.

    Cheap: does not build the network (used by scenario validation).
    """
    if name in BUILTIN_NETWORKS:
        return None
    if name.startswith(SIMBENCH_PREFIX):
        code = name[len(SIMBENCH_PREFIX):]
        if code in simbench_codes():
            return None
        return f"unknown SimBench code {code!r} (see simbench.collect_all_simbench_codes())"
    if name.endswith(".json"):
        path = Path(name) if base_dir is None else base_dir / name
        if path.is_file():
            return None
        return f"pandapower JSON file {str(path)!r} does not exist"
    return (
        f"unknown network {name!r}: allowed are {', '.join(BUILTIN_NETWORKS)}, "
        f"'{SIMBENCH_PREFIX}<code>' or a path ending in .json"
    )


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, base_dir: str | None) -> pp.pandapowerNet:
    if name == "cigre_lv":
        return pn.create_cigre_network_lv()
    if name == "cigre_mv":
        return pn.create_cigre_network_mv(with_der=False)
    if name == "suburban_lv":
        return create_suburban_lv()
    if name.startswith(SIMBENCH_PREFIX):
        import simbench

        return simbench.get_simbench_net(name[len(SIMBENCH_PREFIX):])
    if name.endswith(".json"):
        path = Path(name) if base_dir is None else Path(base_dir) / name
        return pp.from_json(str(path))
    raise UnknownNetworkError(check_network_name(name))


def load_network(name: str, base_dir: Path | None = None, *,
                 study_case: str | None = None) -> pp.pandapowerNet:
    """Build the pandapower network called ``name`` (see module docstring).

    Returns a fresh deep copy each call, so callers may modify it freely; the
    (slow, ~6 s for SimBench) construction itself is cached per process.
    ``study_case`` (SimBench only) applies that study case (module docstring).
    """
    problem = check_network_name(name, base_dir) or check_study_case(name, study_case)
    if problem is not None:
        raise UnknownNetworkError(problem)
    net = copy.deepcopy(_load_cached(name, None if base_dir is None else str(base_dir)))
    if study_case:
        apply_study_case(net, study_case)
    return net


# --------------------------------------------------------------------------- seed 003 stand-in
SUBURBAN_LV = "suburban_lv"


@dataclass(frozen=True)
class SuburbanLVParams:
    """Stand-in for seed 003's private Cyprus suburban LV grid (paper Sec. IV-D, Fig. 6).

    What the paper states: 61 nodes, an 11/0.4 kV 315 kVA Dyn (delta-wye)
    transformer, three radial feeders of about 30-50 residential customers each,
    mostly three-phase customers, symmetric model. Everything else is chosen here.

    Attributes
    ----------
    nodes_per_feeder : tuple of int
        LV nodes along each feeder (20 + 20 + 19 = 59, plus the MV and the LV
        busbar = 61 nodes, as the paper).
    customers_per_feeder : tuple of int
        Residential customers of each feeder (40, 35, 45: inside the paper's 30-50);
        spread over the feeder's nodes as evenly as possible, first nodes first.
    segment_m : tuple of float
        Cable length between consecutive nodes of each feeder [m]: 30-35 m, a
        typical suburban plot frontage times two houses, giving feeders of
        0.6-0.7 km (Cypriot suburban LV feeders run a few hundred metres to ~1 km).
    main_cable, tail_cable : str
        pandapower standard types: "NAYY 4x150 SE" (0.27 kA) for the first
        ``main_nodes`` segments, "NAYY 4x120 SE" (0.242 kA) further out (tapered
        feeders as is common practice).
    main_nodes : int
        Segments of each feeder built with ``main_cable``.
    sn_mva, vn_hv_kv, vn_lv_kv : float
        Transformer rating and voltages (paper: 315 kVA, 11/0.4 kV).
    vk_percent, vkr_percent, pfe_kw, i0_percent : float
        Short-circuit and no-load data of a 315 kVA distribution transformer
        (typical catalogue values for 250-400 kVA oil units: uk 4 %, copper losses
        ~3.6 kW -> vkr ~1.15 %, iron losses ~0.7 kW, no-load current 0.3 %).
    vector_group : str
        "Dyn11" (delta-wye, the paper's Delta-Y; shift 330 deg as in Cyprus/IEC practice).
    peak_kw_per_customer : float
        Peak base demand per customer [kW] (after diversity; sets ``p_mw`` of each
        customer load; profiles scale it): 1.6 kW, about the evening peak of an
        average household in May with no air-conditioning load.
    cos_phi_load : float
        Base-load power factor (eq. (10)'s ``f_d``): 0.95 inductive.
    three_phase_share : float
        Share of customers with a three-phase connection (paper: 80 %), recorded
        per load in ``net.load["three_phase"]`` for the EV-charger and PV rules.
    ext_grid_vm_pu : float
        MV slack voltage (14): 1.0 pu.
    """

    nodes_per_feeder: tuple = (20, 20, 19)
    customers_per_feeder: tuple = (40, 35, 45)
    segment_m: tuple = (32.0, 35.0, 30.0)
    main_cable: str = "NAYY 4x150 SE"
    tail_cable: str = "NAYY 4x120 SE"
    main_nodes: int = 10
    sn_mva: float = 0.315
    vn_hv_kv: float = 11.0
    vn_lv_kv: float = 0.4
    vk_percent: float = 4.0
    vkr_percent: float = 1.15
    pfe_kw: float = 0.7
    i0_percent: float = 0.3
    vector_group: str = "Dyn11"
    peak_kw_per_customer: float = 1.6
    cos_phi_load: float = 0.95
    three_phase_share: float = 0.8
    ext_grid_vm_pu: float = 1.0


def create_suburban_lv(params: SuburbanLVParams = SuburbanLVParams()) -> pp.pandapowerNet:
    """Build the seed 003 suburban LV stand-in (see :class:`SuburbanLVParams`).

    Bus names ``Bus MV``, ``Bus LV0`` (busbar) and ``Bus F<f>-<i>`` (feeder f,
    node i from the busbar); one load ``Load F<f>-<i>-<c>`` per customer with its
    connection (three-phase or not) in ``net.load["three_phase"]``; every third
    customer in each feeder single-phase until the share is met (deterministic).
    """
    net = pp.create_empty_network(name="seed003 suburban LV stand-in", f_hz=50.0)
    mv = pp.create_bus(net, vn_kv=params.vn_hv_kv, name="Bus MV")
    lv0 = pp.create_bus(net, vn_kv=params.vn_lv_kv, name="Bus LV0")
    pp.create_ext_grid(net, mv, vm_pu=params.ext_grid_vm_pu, name="Grid")
    shift = {"Dyn11": 330.0, "Dyn5": 150.0, "Dyn1": 30.0}.get(params.vector_group, 330.0)
    pp.create_transformer_from_parameters(
        net, mv, lv0, sn_mva=params.sn_mva, vn_hv_kv=params.vn_hv_kv, vn_lv_kv=params.vn_lv_kv,
        vk_percent=params.vk_percent, vkr_percent=params.vkr_percent, pfe_kw=params.pfe_kw,
        i0_percent=params.i0_percent, shift_degree=shift, vector_group=params.vector_group,
        name="Trafo 315kVA")
    tan = float(np.tan(np.arccos(params.cos_phi_load)))
    p_mw = params.peak_kw_per_customer / 1e3
    for f, (n_nodes, n_cust, seg) in enumerate(
            zip(params.nodes_per_feeder, params.customers_per_feeder, params.segment_m), start=1):
        prev = lv0
        per_node = np.full(n_nodes, n_cust // n_nodes)
        per_node[: n_cust % n_nodes] += 1
        for i in range(1, n_nodes + 1):
            b = pp.create_bus(net, vn_kv=params.vn_lv_kv, name=f"Bus F{f}-{i}")
            std = params.main_cable if i <= params.main_nodes else params.tail_cable
            pp.create_line(net, prev, b, length_km=seg / 1e3, std_type=std, name=f"Line F{f}-{i}")
            for c in range(int(per_node[i - 1])):
                pp.create_load(net, b, p_mw=p_mw, q_mvar=p_mw * tan, name=f"Load F{f}-{i}-{c + 1}")
            prev = b
    # deterministic split: customer k (counted over the whole grid) is three-phase when
    # floor((k + 1) s) > floor(k s), s = three_phase_share: exactly round(s n) of n, spread evenly
    idx = np.arange(len(net.load))
    net.load["three_phase"] = np.floor((idx + 1) * params.three_phase_share) > np.floor(idx * params.three_phase_share)
    return net
