"""The faster receding-horizon paths of issue 17 give the reference optimum.

Oracle: the pyomo/HiGHS formulation (:mod:`simulators.scheduler.pyomo_model`), objective
to 1e-6 relative. Powers (smart charging, whose powers are unique) to 1e-5 kW against the
path before issue 17 (every screened row, charger rating as the only power bound, PIQP):
HiGHS's QP answer is off by up to 2.7e-4 kW in single elements at objectives equal to
4e-10 relative, PIQP's a little lower (the SOC objective is nearly flat along such moves),
so against HiGHS powers are checked to 1e-3 kW. Clarabel at its default tolerances is
off by 1.2e-5 relative in the objective when soft rows carry the 1e6 penalty (tested).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from simulators.scheduler import matrix_model as mm
from simulators.scheduler import model_data as md
from simulators.scheduler.problem import StrategyOptions
from simulators.scheduler.receding import run_receding
from simulators.scheduler.strategies import solve
from tests.test_strategies import OPT, mv_problem, mv_sens  # noqa: F401  (fixture)


def assert_powers_close(p_kw, ref_kw):
    """Within 1e-3 kW of HiGHS's answer (module docstring)."""
    assert np.abs(np.asarray(p_kw) - np.asarray(ref_kw)).max() < 1e-3


def binding_problem(sens, **kw):
    """Small CIGRE MV case whose voltage rows bind on several steps."""
    return mv_problem(sens, n_per_bus=5, n_steps=12, load=0.55, **kw)


def test_case_has_binding_voltage_rows(mv_sens):
    p = binding_problem(mv_sens)
    s = solve(p, StrategyOptions(name="smart"))
    vm = mm.linear_vm(p, md.grid_constants(p), s.p_kw, s.q_kvar)
    assert (vm < p.limits.vm_min_pu + 1e-7).sum() >= 3  # rows at their bound


@pytest.mark.parametrize("name", OPT)
def test_row_generation_equals_pyomo(mv_sens, name):
    """Cold constraint generation (empty seed: several rounds), seeded and full solves
    all give the pyomo optimum."""
    p = binding_problem(mv_sens)
    ref = solve(p, StrategyOptions(name=name, solver="highs"), path="pyomo")
    assert ref.status == "optimal"
    shape = (p.n_steps, p.sens.bus_ids.size)
    empty = {"vm_min": np.zeros(shape, bool), "vm_max": np.zeros(shape, bool)}
    opts = StrategyOptions(name=name)
    gen = mm.solve_generated(p, opts, seed=empty)
    assert gen.raw.ok and gen.rounds >= 2
    full = solve(p, replace(opts, row_generation=False))
    first = solve(p, opts)  # no seed: one full solve, returns its near-binding rows
    seeded = solve(p, opts, seed_rows=first.vm_rows)
    cold = solve(p, opts, seed_rows=empty)
    for s in (full, first, seeded, cold):
        assert s.status == "optimal", s.message
        assert s.objective == pytest.approx(ref.objective, rel=1e-6)
    if name == "smart":
        for s in (first, seeded, cold):
            np.testing.assert_allclose(s.p_kw, full.p_kw, atol=1e-5)
        assert_powers_close(full.p_kw, ref.p_kw)


def test_headroom_caps_exact(mv_sens, monkeypatch):
    """EVs close to full (power capped by their energy room): same optimum as pyomo and
    as the uncapped formulation."""
    p = binding_problem(mv_sens)
    rng = np.random.default_rng(3)
    p = replace(p, soc0=np.clip(rng.uniform(0.95, 0.999, p.n_evs), 0, 1))
    for name in ("smart", "v2g"):
        opts = StrategyOptions(name=name, row_generation=False)
        ref = solve(p, StrategyOptions(name=name, solver="highs"), path="pyomo")
        capped = solve(p, opts)
        qp = mm.build(p, opts)
        monkeypatch.setattr(mm, "HEADROOM_CAPS", False)
        plain = solve(p, opts)
        monkeypatch.setattr(mm, "HEADROOM_CAPS", True)
        assert capped.objective == pytest.approx(ref.objective, rel=1e-6)
        assert capped.objective == pytest.approx(plain.objective, rel=1e-6)
        if name == "smart":
            assert (qp.ub[qp.i_pp] < 3.6 - 1e-6).mean() > 0.5  # the caps bind
            np.testing.assert_allclose(capped.p_kw, plain.p_kw, atol=1e-5)
            assert_powers_close(capped.p_kw, ref.p_kw)


def test_auto_solver_without_cones_is_the_reference_optimum(mv_sens):
    """cone='soc', smart: no cone survives screening, 'auto' solves the same QP with PIQP
    (and more accurately than Clarabel did)."""
    p = binding_problem(mv_sens)
    opts = StrategyOptions(name="smart", cone="soc", solver="auto")
    qp = mm.build(p, opts)
    assert qp.cone_F is None
    auto = solve(p, opts)
    assert "PIQP" in auto.message
    ref = solve(p, StrategyOptions(name="smart", solver="highs"), path="pyomo")
    assert auto.objective == pytest.approx(ref.objective, rel=1e-6)
    assert_powers_close(auto.p_kw, ref.p_kw)
    clarabel = solve(p, replace(opts, solver="clarabel", row_generation=False))
    assert clarabel.soft_violation_max > 1e-3  # soft rows with the 1e6 penalty in use
    assert clarabel.objective == pytest.approx(ref.objective, rel=1e-4)
    with pytest.raises(ValueError, match="row_generation"):
        StrategyOptions(row_generation="yes").validate()


@pytest.mark.parametrize("name", ("smart", "v2g_q"))
def test_receding_seeded_reproducible_and_exact(mv_sens, name):
    """Receding runs with seeded row generation: bit-for-bit the same twice, and the
    same closed loop as one full solve per step."""
    p = binding_problem(mv_sens, seed=1)
    opts = StrategyOptions(name=name)
    a = run_receding(p, opts, arrival_known=False)
    b = run_receding(p, opts, arrival_known=False)
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    np.testing.assert_array_equal(a.q_kvar, b.q_kvar)
    np.testing.assert_array_equal(a.soc, b.soc)
    full = run_receding(p, replace(opts, row_generation=False), arrival_known=False)
    np.testing.assert_allclose(a.soc, full.soc, atol=1e-6)
    if name == "smart":
        np.testing.assert_allclose(a.p_kw, full.p_kw, atol=1e-4)


def with_duplicates(p, copies=3):
    """Every EV of ``p`` present ``copies`` times (identical for the optimiser)."""
    idx = np.repeat(np.arange(p.n_evs), copies)
    fields = {k: np.asarray(getattr(p, k))[idx] for k in (
        "ev_col", "capacity_kwh", "s_max_kva", "efficiency", "soc0", "soc_target", "soc_min", "soc_max",
        "can_discharge", "can_reactive")}
    return replace(p, ev_ids=np.arange(idx.size), plugged=np.asarray(p.plugged)[:, idx], **fields)


@pytest.mark.parametrize("name", OPT)
def test_aggregation_of_identical_evs_is_exact(mv_sens, name):
    """Identical EVs solved as one group EV: the pyomo optimum, and (smart) the powers of
    the solve without aggregation, split equally."""
    p = with_duplicates(mv_problem(mv_sens, n_per_bus=2, n_steps=12))
    grouped, inverse, mult = mm.aggregate_identical(p)
    assert grouped is not None and grouped.n_evs == p.n_evs // 3 and np.all(mult == 3)
    np.testing.assert_array_equal(grouped.ev_col[inverse], p.ev_col)
    ref = solve(p, StrategyOptions(name=name, solver="highs"), path="pyomo")
    agg = solve(p, StrategyOptions(name=name))
    plain = solve(p, StrategyOptions(name=name, aggregate=False))
    assert agg.status == plain.status == "optimal"
    assert agg.objective == pytest.approx(ref.objective, rel=1e-6)
    assert agg.objective == pytest.approx(plain.objective, rel=1e-6)
    np.testing.assert_array_equal(agg.p_kw[:, 0::3], agg.p_kw[:, 1::3])  # split equally
    if name == "smart":
        np.testing.assert_allclose(agg.p_kw, plain.p_kw, atol=1e-5)
        assert_powers_close(agg.p_kw, ref.p_kw)
    if name == "smart_q":
        np.testing.assert_allclose(agg.q_kvar, plain.q_kvar, atol=1e-4)
    with pytest.raises(ValueError, match="aggregate"):
        StrategyOptions(aggregate=1).validate()
