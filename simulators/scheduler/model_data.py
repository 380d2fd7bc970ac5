"""Numbers shared by every formulation of the scheduling problem (seed 000, eq. (12)).

Both the pyomo reference (:mod:`.pyomo_model`) and the matrix path
(:mod:`.matrix_model`) take their coefficients from here, so that they describe the
same problem: SOC gains (eq. (10)), objective weights (eq. (8)), the constant part of
the linearised grid model (eqs. (1), (12f)), apparent-power limits of lines and
transformers (eqs. (12h), (12i)) and the polygon approximating the cones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .problem import ChargingProblem, StrategyOptions


@dataclass(frozen=True)
class StrategyFlags:
    """Which variables a strategy has (seed 000, section IV).

    Attributes
    ----------
    reactive : ndarray of bool, shape (V,)
        EV has a Q variable (``*_q`` strategies and ``can_reactive``).
    discharge : ndarray of bool, shape (V,)
        EV has a ``P-`` variable (``v2g*`` strategies and ``can_discharge``).
    """

    reactive: np.ndarray
    discharge: np.ndarray


def strategy_flags(problem: ChargingProblem, options: StrategyOptions) -> StrategyFlags:
    """Per-EV variable sets of strategy ``options.name``."""
    use_q = options.name in ("smart_q", "v2g_q")
    use_d = options.name in ("v2g", "v2g_q")
    cr = np.asarray(problem.can_reactive, dtype=bool)
    cd = np.asarray(problem.can_discharge, dtype=bool)
    return StrategyFlags(reactive=cr & use_q, discharge=cd & use_d)


def soc_gains(problem: ChargingProblem) -> tuple[np.ndarray, np.ndarray]:
    """SOC change per kW for one step, charging and discharging (seed 000, eq. (10)).

    Returns
    -------
    a, b : ndarray, shape (V,)
        ``a = eta dt / E`` [1/kW], ``b = dt / (eta E)`` [1/kW].
    """
    eta = np.asarray(problem.efficiency, dtype=float)
    e = np.asarray(problem.capacity_kwh, dtype=float)
    return eta * problem.dt_h / e, problem.dt_h / (eta * e)


def soc_bounds(problem: ChargingProblem) -> tuple[np.ndarray, np.ndarray]:
    """SOC limits of eq. (12c), widened to contain ``soc0`` [-]."""
    soc0 = np.asarray(problem.soc0, dtype=float)
    return (np.minimum(problem.soc_min, soc0), np.maximum(problem.soc_max, soc0))


def plugged_pairs(plugged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plugged (t, v) pairs ordered by EV, then step.

    Returns
    -------
    t, v : ndarray of int, shape (J,)
    """
    v, t = np.nonzero(np.asarray(plugged, dtype=bool).T)
    return t, v


def soc_weights(plugged: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of eq. (8) on the SOC after each plugged step.

    The SOC reached at the end of a plugged step stays constant through the
    following unplugged steps, so the term ``(SOC - SOC*)^2`` of every later
    instant up to the next plugged step (or the horizon end) is charged to it.

    Parameters
    ----------
    plugged : ndarray of bool, shape (T, V)
    t, v : ndarray of int, shape (J,)
        Output of :func:`plugged_pairs`.

    Returns
    -------
    w : ndarray, shape (J,)
        Number of instants in ``1..T`` at which the SOC equals the SOC after step
        ``t[j]`` [-].
    n_const : ndarray of int, shape (V,)
        Instants before the first plugged step (SOC = ``soc0``, constant term).
    """
    n_steps, n_ev = np.shape(plugged)
    nxt = np.empty_like(t)
    if t.size:
        nxt[:-1] = t[1:]
        same = np.zeros(t.size, dtype=bool)
        same[:-1] = v[1:] == v[:-1]
        nxt = np.where(same, nxt, n_steps)
    w = (nxt - t).astype(float)
    first = np.full(n_ev, n_steps, dtype=int)
    np.minimum.at(first, v, t)
    return w, first


def grid_constants(problem: ChargingProblem) -> dict:
    """Constant part of every linearised grid quantity for every step (eq. (12f)).

    ``x_t = x0 + dx/dP (P_net,t - P0) + dx/dQ (Q_net,t - Q0)``: the value with all
    EVs idle. The EV contribution is added by the formulations through the nodal
    aggregates (eqs. (1), (6), (7)).

    Returns
    -------
    dict
        ``vm`` (T, n) [pu], ``i`` (T, m) [kA], ``pl``/``ql`` (T, m) [kW]/[kvar],
        ``pt``/``qt`` (T, k) [kW]/[kvar].
    """
    s = problem.sens
    dp = np.asarray(problem.net_p_kw, dtype=float) - s.p0_kw
    dq = np.asarray(problem.net_q_kvar, dtype=float) - s.q0_kvar

    def lin(x0, a, b):
        return np.asarray(x0, dtype=float) + dp @ np.asarray(a).T + dq @ np.asarray(b).T

    vm = lin(s.vm0_pu, s.dvm_dp, s.dvm_dq)
    if problem.vm_offset_pu is not None:
        vm = vm + np.asarray(problem.vm_offset_pu, dtype=float)
    return {
        "vm": vm,
        "i": lin(s.i0_ka, s.di_dp, s.di_dq),
        "pl": lin(s.pl0_kw, s.dpl_dp, s.dpl_dq),
        "ql": lin(s.ql0_kvar, s.dql_dp, s.dql_dq),
        "pt": lin(s.pt0_kw, s.dpt_dp, s.dpt_dq),
        "qt": lin(s.qt0_kvar, s.dqt_dp, s.dqt_dq),
    }


def line_s_max_kva(problem: ChargingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Apparent-power limit of each line's from end (seed 000, eq. (12h)).

    ``|S| <= sqrt(3) V_from I_max``. The from-bus voltage is taken as
    ``min(vm_from0_pu, vm_min_pu)``: the voltage rows keep the voltage above
    ``vm_min_pu``, so the limit guarantees ``|I| <= I_max`` whenever they hold
    (conservative by at most the width of the lower band).

    Returns
    -------
    s_max : ndarray, shape (m,)
        Limit including ``limits.line_loading_max`` [kVA]; NaN where the nominal
        voltage is unknown (no ``line_vn_kv`` and no current at the operating
        point): such lines use the linearised current rows instead.
    use_cone : ndarray of bool, shape (m,)
    """
    s = problem.sens
    i0 = np.asarray(s.i0_ka, dtype=float)
    vmf = np.asarray(s.vm_from0_pu, dtype=float)
    if problem.line_vn_kv is not None:
        vn = np.asarray(problem.line_vn_kv, dtype=float)
    else:
        s0 = np.hypot(s.pl0_kw, s.ql0_kvar)
        with np.errstate(divide="ignore", invalid="ignore"):
            vn = np.where(i0 > 1e-9, s0 / (np.sqrt(3.0) * vmf * np.maximum(i0, 1e-300) * 1e3), np.nan)
    v_used = np.minimum(vmf, problem.limits.vm_min_pu)
    s_max = np.sqrt(3.0) * v_used * vn * np.asarray(s.i_max_ka, dtype=float) * 1e3
    s_max = s_max * problem.limits.line_loading_max
    return s_max, np.isfinite(s_max)


def trafo_s_max_kva(problem: ChargingProblem) -> np.ndarray:
    """Transformer apparent-power limit of eq. (12i) [kVA]."""
    return np.asarray(problem.sens.st_max_kva, dtype=float) * problem.limits.trafo_loading_max


def polygon(n_sides: int, half: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Inscribed regular polygon approximating ``P^2 + Q^2 <= S^2``.

    Vertices at angles ``2 pi i / n`` (one on the +P axis), facets
    ``cos(th) P + sin(th) Q <= S cos(pi / n)`` with ``th = pi (2 i + 1) / n``. The
    polygon lies inside the disc (every point satisfies the exact limit) and
    loses at most ``1 - cos(pi / n)`` of the radius (1.9 % for n = 16).

    Parameters
    ----------
    n_sides : int
    half : bool
        Only the facets facing ``P > 0`` (2-quadrant chargers with ``P >= 0``).

    Returns
    -------
    cos_th, sin_th : ndarray
    rhs_factor : float
        ``cos(pi / n)``.
    """
    th = np.pi * (2 * np.arange(n_sides) + 1) / n_sides
    c, s = np.cos(th), np.sin(th)
    if half:
        keep = c > 1e-12
        c, s = c[keep], s[keep]
    return c, s, float(np.cos(np.pi / n_sides))


def soc_trajectory(problem: ChargingProblem, p_kw: np.ndarray) -> np.ndarray:
    """SOC at every instant for a power schedule (seed 000, eq. (4)) [-], shape (T+1, V)."""
    a, b = soc_gains(problem)
    p = np.asarray(p_kw, dtype=float)
    d = a * np.maximum(p, 0.0) - b * np.maximum(-p, 0.0)
    soc = np.empty((p.shape[0] + 1, p.shape[1]))
    soc[0] = problem.soc0
    soc[1:] = problem.soc0 + np.cumsum(d, axis=0)
    return soc


def objective_value(problem: ChargingProblem, p_kw: np.ndarray, k_weight: float) -> float:
    """``J`` of seed 000 eq. (11) for a schedule: ``sum_{t=1..T} (SOC_t - SOC*)^2 + k sum |P|``.

    ``P+``/``P-`` are taken as the positive/negative parts of ``p_kw``.
    """
    soc = soc_trajectory(problem, p_kw)
    dev = soc[1:] - np.asarray(problem.soc_target, dtype=float)
    return float(np.sum(dev * dev) + k_weight * np.sum(np.abs(p_kw)))


def step_blocks(n_steps: int, fine_steps: int | None, block_steps: int) -> np.ndarray:
    """Decision block of every step for move blocking.

    Parameters
    ----------
    n_steps : int
        Horizon length ``T`` [steps].
    fine_steps : int or None
        Leading steps with their own block each; ``None``: every step its own block.
    block_steps : int
        Steps per block after ``fine_steps`` (the last block may be shorter).

    Returns
    -------
    ndarray of int, shape (T,)
        Non-decreasing block index ``0 .. n_blocks - 1`` per step.
    """
    t = np.arange(int(n_steps))
    if fine_steps is None or fine_steps >= n_steps or block_steps == 1:
        return t
    f = int(fine_steps)
    return np.where(t < f, t, f + (t - f) // int(block_steps))


def blocked_plugged(plugged: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Plug matrix under move blocking: an EV counts in a block only if plugged throughout.

    Parameters
    ----------
    plugged : ndarray of bool, shape (T, V)
    blocks : ndarray of int, shape (T,)
        Output of :func:`step_blocks`.

    Returns
    -------
    ndarray of bool, shape (T, V)
        ``plugged`` with every partially plugged block set to False.
    """
    plugged = np.asarray(plugged, dtype=bool)
    n_blk = int(blocks[-1]) + 1 if blocks.size else 0
    if n_blk == blocks.size:
        return plugged
    unplugged = np.zeros((n_blk, plugged.shape[1]), dtype=int)
    np.add.at(unplugged, blocks, (~plugged).astype(int))
    return plugged & (unplugged[blocks] == 0)
