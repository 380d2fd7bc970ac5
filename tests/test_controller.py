"""The scheduler's controller in a closed loop with the EV fleet model (no mosaik)."""

from __future__ import annotations

import numpy as np

from adapters.networks import load_network
from simulators.ev_fleet.model import FleetModel
from simulators.ev_fleet.population import EVSpec
from simulators.scheduler.controller import Controller, ControllerConfig
from simulators.scheduler.problem import GridBounds, StrategyOptions

STEP_S = 3600
N_STEPS = 8


def specs() -> list[EVSpec]:
    buses = (2, 16, 19, 19)  # R1, R15, R18 of CIGRE LV
    return [
        EVSpec(ev_id=f"EV-{i}", home_bus=b, capacity_kwh=16.0, charger_kva=3.6, efficiency=0.9,
               can_discharge=False, can_reactive=False, arrival_s=0.0 if i < 3 else 2 * STEP_S,
               departure_s=float(N_STEPS * STEP_S), soc_initial=0.3 + 0.1 * i, soc_target=1.0)
        for i, b in enumerate(buses)
    ]


def closed_loop(controller: Controller) -> np.ndarray:
    fleet = FleetModel(specs(), STEP_S)
    applied = []
    for k in range(N_STEPS):
        fleet.step(k * STEP_S)
        setpoints, _ = controller.plan(k, fleet.fleet_state())
        res = fleet.step(k * STEP_S, setpoints)
        del res
        applied.append(np.array(fleet.p_kw, dtype=float))
    return np.array(applied)


def make_controller() -> Controller:
    net = load_network("cigre_lv")
    # a heavy evening on the residential feeder so that the -8 % band binds
    load_p = {int(r.bus): [r.p_mw * 1e3 * 1.2] * N_STEPS for r in net.load.itertuples()}
    load_q = {int(r.bus): [r.q_mvar * 1e3 * 1.2] * N_STEPS for r in net.load.itertuples()}
    cfg = ControllerConfig("smart", "receding", STEP_S, N_STEPS, GridBounds(0.92, 1.08),
                           StrategyOptions(name="smart"))
    return Controller(net, cfg, load_p, load_q)


def test_receding_reuse_equals_solving_every_step(monkeypatch):
    reused = make_controller()
    p_reused = closed_loop(reused)
    fresh = make_controller()
    monkeypatch.setattr(fresh, "_plan_still_optimal", lambda k, plugged: False)
    p_fresh = closed_loop(fresh)
    np.testing.assert_allclose(p_reused, p_fresh, atol=1e-4)
    assert fresh.n_solves == N_STEPS
    # solves only at the start and when EV-3 arrives (plus nothing else)
    assert reused.n_solves == 2


def test_plans_respect_charger_and_plug_windows():
    p = closed_loop(make_controller())
    assert p.max() <= 3.6 + 1e-6 and p.min() >= -1e-9
    assert np.all(p[:2, 3] == 0.0)  # EV-3 arrives at step 2


def autonomous_plan(**autonomous) -> dict[str, int]:
    """Charging bus per EV of a day-ahead autonomous plan on a loaded CIGRE LV feeder."""
    net = load_network("cigre_lv")
    load_p = {int(r.bus): [r.p_mw * 1e3 * 0.8] * N_STEPS for r in net.load.itertuples()}
    load_q = {int(r.bus): [r.q_mvar * 1e3 * 0.8] * N_STEPS for r in net.load.itertuples()}
    evs = [EVSpec(ev_id=f"EV-{i}", home_bus=b, capacity_kwh=16.0, charger_kva=3.6, efficiency=0.9,
                  can_discharge=False, can_reactive=False, arrival_s=0.0,
                  departure_s=float(N_STEPS * STEP_S), soc_initial=0.3, soc_target=1.0, autonomous=True)
           for i, b in enumerate([2] * 4 + [19] * 30)]  # R1 and the feeder end R18
    cfg = ControllerConfig("autonomous", "day_ahead", STEP_S, N_STEPS, GridBounds(0.92, 1.08),
                           StrategyOptions(name="smart"), e_star_kwh=0.06, autonomous=autonomous)
    controller = Controller(net, cfg, load_p, load_q, [s.to_dict() for s in evs])
    fleet = FleetModel(evs, STEP_S, e_star_kwh=0.06, charging_buses=[2, 19])
    fleet.step(0.0)
    setpoints, info = controller.plan(0, fleet.fleet_state())
    assert info.status != "fallback"
    return {e: sp[2] for e, sp in setpoints.items()}


def test_autonomous_options_reach_the_solver():
    moved = sum(bus != (2 if int(e.split("-")[1]) < 4 else 19) for e, bus in autonomous_plan().items())
    assert moved > 0  # the voltage at R18 binds: EVs drive to R1
    prohibitive = autonomous_plan(move_penalty=1e3)
    assert all(bus == (2 if int(e.split("-")[1]) < 4 else 19) for e, bus in prohibitive.items())


def ac_controller(load_factor: float, bounds: GridBounds) -> Controller:
    net = load_network("cigre_lv")
    load_p = {int(r.bus): [r.p_mw * 1e3 * load_factor] * N_STEPS for r in net.load.itertuples()}
    load_q = {int(r.bus): [r.q_mvar * 1e3 * load_factor] * N_STEPS for r in net.load.itertuples()}
    cfg = ControllerConfig("smart", "receding", STEP_S, N_STEPS, bounds, StrategyOptions(name="smart"),
                           ac_iterations=1)
    return Controller(net, cfg, load_p, load_q)


def test_ac_correction_skip_and_reuse_are_exact(monkeypatch):
    """With ac_iterations = 1: a plan whose voltage rows are all slack and that the AC
    check keeps inside the band is kept without the corrected solve, and replayed while
    nothing is new; the applied powers equal re-solving twice at every step."""
    import simulators.scheduler.controller as ctl

    for factor, bounds, expect_skip in ((0.5, GridBounds(0.9, 1.1), True),
                                        (1.2, GridBounds(0.92, 1.08), False)):
        fast = ac_controller(factor, bounds)
        p_fast = closed_loop(fast)
        with monkeypatch.context() as m:
            m.setattr(ctl, "_still_optimal_with_offset", lambda *a: False)
            slow = ac_controller(factor, bounds)
            p_slow = closed_loop(slow)
        np.testing.assert_allclose(p_fast, p_slow, atol=1e-4)
        assert slow.n_solves == N_STEPS and slow.n_ac_skipped == 0
        if expect_skip:
            assert fast.n_ac_skipped == fast.n_solves == 2  # plan at 0 and at EV-3's arrival
        else:
            assert fast.n_ac_skipped < fast.n_solves == N_STEPS
