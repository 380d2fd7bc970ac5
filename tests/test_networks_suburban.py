"""Tests of the seed 003 suburban LV stand-in grid (adapters/networks.py)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandapower as pp
import pandapower.topology as top

from adapters.networks import SuburbanLVParams, check_network_name, load_network


def test_suburban_lv_structure_and_peak_voltage():
    net = load_network("suburban_lv")
    assert check_network_name("suburban_lv") is None
    assert len(net.bus) == 61
    tr = net.trafo.iloc[0]
    assert len(net.trafo) == 1 and tr.sn_mva == 0.315 and tr.vector_group.startswith("Dyn")
    assert (tr.vn_hv_kv, tr.vn_lv_kv) == (11.0, 0.4)
    g = top.create_nxgraph(net)
    assert nx.is_tree(g)                                   # radial and connected
    lv0 = int(net.bus.index[net.bus.name == "Bus LV0"][0])
    feeders = [c for c in nx.connected_components(g.subgraph(set(g) - {lv0})) if len(c) > 1 or
               net.bus.vn_kv[next(iter(c))] < 1]
    lv_feeders = [c for c in feeders if all(net.bus.vn_kv[b] < 1 for b in c)]
    assert len(lv_feeders) == 3
    per_feeder = [int(net.load.bus.isin(c).sum()) for c in lv_feeders]
    assert all(30 <= n <= 50 for n in per_feeder), per_feeder
    assert net.load["three_phase"].mean() == SuburbanLVParams().three_phase_share
    assert set(net.line.std_type) <= set(pp.available_std_types(net, "line").index)
    pp.runpp(net)                                         # every customer at its peak demand
    assert net.res_bus.vm_pu.min() >= 0.9 and net.res_bus.vm_pu.max() <= 1.1
    assert net.res_trafo.loading_percent.iloc[0] < 100.0
