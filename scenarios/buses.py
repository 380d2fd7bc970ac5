"""Resolve the bus references written in scenario files to pandapower bus indices."""

from __future__ import annotations

import pandapower as pp

from simulators.grid.naming import element_eids


def resolve_bus(net: pp.pandapowerNet, ref: str | int) -> int:
    """Pandapower bus index for ``ref``.

    ``ref`` may be the integer index, the bus name (``"Bus R11"``), the short name
    (``"R11"``) or the entity id (``"Bus-R11"``). For CIGRE MV the papers' node
    numbers are the bus indices, so ``"5"`` and ``5`` both name node 5.

    Raises
    ------
    KeyError
        with a message naming the reference and a few valid names.
    """
    in_service = net.bus.index[net.bus.in_service.astype(bool)]
    if isinstance(ref, int) and not isinstance(ref, bool):
        if ref in in_service:
            return int(ref)
        raise KeyError(f"unknown bus {ref!r}: bus indices are {int(in_service.min())}..{int(in_service.max())}")
    eids = element_eids(net, "bus")
    text = str(ref).strip()
    for idx in in_service:
        name = net.bus.at[idx, "name"]
        eid = eids[int(idx)]
        if text in (str(name), eid, eid.split("-", 1)[1]):
            return int(idx)
    if text.isdigit() and int(text) in in_service:
        return int(text)
    examples = ", ".join(eids[int(i)].split("-", 1)[1] for i in list(in_service)[:6])
    raise KeyError(f"unknown bus {ref!r} in network (e.g. {examples}, ...)")


def monitored_buses(net: pp.pandapowerNet, prefix: str = "") -> list[str]:
    """Entity ids of the buses a study is judged on (``grid.monitor_buses``).

    The in-service buses whose short name starts with ``prefix`` (all when empty),
    at the lowest nominal voltage among them: the feeder itself, without the
    upstream bus of its transformer (CIGRE LV's ``R0`` is the 20 kV side of the
    R feeder's transformer and sits at the slack voltage) or the 110 kV slack
    bus of CIGRE MV.
    """
    eids = element_eids(net, "bus")
    in_service = net.bus.index[net.bus.in_service.astype(bool)]
    chosen = [int(i) for i in in_service if eids[int(i)].split("-", 1)[1].startswith(prefix)]
    if not chosen:
        return []
    vn = net.bus.vn_kv.loc[chosen]
    return [eids[i] for i in chosen if vn.at[i] <= vn.min() + 1e-9]
