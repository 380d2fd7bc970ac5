"""Linearised grid model from sensitivity coefficients.

Sensitivities of bus voltage magnitudes, line currents and flows and substation
transformer flows with respect to the nodal active and reactive injections at every
non-slack bus, solved from the load-flow Jacobian at an operating point
(Christakou et al. 2013 [1]_; used in seed 000, eqs. (7)-(9)).

Pure model: no mosaik, no optimisation. All powers in kW/kvar, load convention
(consumption positive), see ``docs/conventions.md``.

References
----------
.. [1] K. Christakou, J.-Y. Le Boudec, M. Paolone, D.-C. Tomozei, "Efficient
   computation of sensitivity coefficients of node voltages and line currents in
   unbalanced radial electrical distribution networks", IEEE Trans. Smart Grid
   4(2), 741-750, 2013.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearPrediction:
    """First-order prediction of the grid state for given nodal injections.

    Shapes are ``(..., n_x)`` with the leading dimensions of the injections passed to
    :meth:`Sensitivities.predict`.

    Attributes
    ----------
    vm_pu : ndarray, shape (..., n)
        Voltage magnitude of each non-slack bus (``Sensitivities.bus_ids``) [pu].
    i_ka : ndarray, shape (..., m)
        Current magnitude at the from end of each line (``line_ids``) [kA].
        Linearised magnitude; see ``line_p_kw``/``line_q_kvar`` for the cone form.
    line_p_kw, line_q_kvar : ndarray, shape (..., m)
        Active/reactive flow entering each line at its from end [kW], [kvar].
    trafo_p_kw, trafo_q_kvar : ndarray, shape (..., k)
        Active/reactive flow entering each substation transformer at its HV side
        [kW], [kvar].
    """

    vm_pu: np.ndarray
    i_ka: np.ndarray
    line_p_kw: np.ndarray
    line_q_kvar: np.ndarray
    trafo_p_kw: np.ndarray
    trafo_q_kvar: np.ndarray


@dataclass(frozen=True)
class Sensitivities:
    """Sensitivity coefficients of a grid at one operating point.

    ``n`` is the number of non-slack in-service buses, ``m`` of in-service lines,
    ``k`` of in-service transformers fed from the slack side. The columns of every
    matrix are the buses of ``bus_ids`` in that order. Injections use the load
    convention (consumption positive), so ``dvm_dp`` is mostly negative.

    Attributes
    ----------
    bus_ids : ndarray of int, shape (n,)
        pandapower bus index of each row of ``vm0_pu``/``dvm_*`` and each column of
        every matrix.
    p0_kw, q0_kvar : ndarray, shape (n,)
        Nodal net demand at the operating point [kW], [kvar] (load convention).
    vm0_pu : ndarray, shape (n,)
        Voltage magnitude at the operating point [pu].
    dvm_dp, dvm_dq : ndarray, shape (n, n)
        d vm_i / d P_j [pu/kW] and d vm_i / d Q_j [pu/kvar] ([1]_, eqs. (5)-(6)).
    line_ids : ndarray of int, shape (m,)
        pandapower line index (in-service lines).
    i0_ka, i_max_ka : ndarray, shape (m,)
        Current magnitude at the from end at the operating point, and ampacity
        ``max_i_ka * df * parallel`` [kA].
    di_dp, di_dq : ndarray, shape (m, n)
        d |I_from| / d P_j [kA/kW], d |I_from| / d Q_j [kA/kvar] ([1]_, eq. (13)).
    pl0_kw, ql0_kvar : ndarray, shape (m,)
        Active/reactive flow entering the line at its from end [kW], [kvar].
    dpl_dp, dpl_dq, dql_dp, dql_dq : ndarray, shape (m, n)
        Sensitivities of the from-end line flows [kW/kW], [kW/kvar], [kvar/kW],
        [kvar/kvar].
    vm_from0_pu : ndarray, shape (m,)
        From-bus voltage magnitude at the operating point [pu] (converts S to I).
    trafo_ids : ndarray of int, shape (k,)
        pandapower trafo index of the transformers fed from the slack side.
    pt0_kw, qt0_kvar : ndarray, shape (k,)
        Flow entering each transformer at its HV side [kW], [kvar].
    st_max_kva : ndarray, shape (k,)
        Rating ``sn_mva * parallel * 1000`` [kVA].
    dpt_dp, dpt_dq, dqt_dp, dqt_dq : ndarray, shape (k, n)
        Sensitivities of the HV-side transformer flows.
    """

    bus_ids: np.ndarray
    p0_kw: np.ndarray
    q0_kvar: np.ndarray
    vm0_pu: np.ndarray
    dvm_dp: np.ndarray
    dvm_dq: np.ndarray
    line_ids: np.ndarray
    i0_ka: np.ndarray
    i_max_ka: np.ndarray
    di_dp: np.ndarray
    di_dq: np.ndarray
    pl0_kw: np.ndarray
    ql0_kvar: np.ndarray
    dpl_dp: np.ndarray
    dpl_dq: np.ndarray
    dql_dp: np.ndarray
    dql_dq: np.ndarray
    vm_from0_pu: np.ndarray
    trafo_ids: np.ndarray
    pt0_kw: np.ndarray
    qt0_kvar: np.ndarray
    st_max_kva: np.ndarray
    dpt_dp: np.ndarray
    dpt_dq: np.ndarray
    dqt_dp: np.ndarray
    dqt_dq: np.ndarray

    def column(self, bus_id: int) -> int:
        """Column index of pandapower bus ``bus_id`` in every matrix.

        Raises
        ------
        KeyError
            If ``bus_id`` is not a non-slack in-service bus.
        """
        hits = np.flatnonzero(self.bus_ids == int(bus_id))
        if hits.size == 0:
            raise KeyError(f"bus {bus_id} is not a non-slack in-service bus of this model")
        return int(hits[0])

    def predict(self, p_kw, q_kvar) -> LinearPrediction:
        """First-order prediction for absolute nodal injections.

        Parameters
        ----------
        p_kw, q_kvar : array_like, shape (..., n)
            Absolute nodal net demand [kW], [kvar] (load convention), columns in
            ``bus_ids`` order.

        Returns
        -------
        LinearPrediction
            ``x = x0 + dx/dP (P - P0) + dx/dQ (Q - Q0)`` for every quantity.

        Raises
        ------
        ValueError
            If the last dimension of ``p_kw`` or ``q_kvar`` is not ``n``.
        """
        n = self.bus_ids.shape[0]
        dp = np.asarray(p_kw, dtype=float) - self.p0_kw
        dq = np.asarray(q_kvar, dtype=float) - self.q0_kvar
        if dp.shape[-1:] != (n,) or dq.shape[-1:] != (n,):
            raise ValueError(
                f"injections must have last dimension n={n} (bus_ids order), got "
                f"p_kw {np.shape(p_kw)}, q_kvar {np.shape(q_kvar)}"
            )

        def lin(x0, dx_dp, dx_dq):
            return x0 + dp @ dx_dp.T + dq @ dx_dq.T

        return LinearPrediction(
            vm_pu=lin(self.vm0_pu, self.dvm_dp, self.dvm_dq),
            i_ka=lin(self.i0_ka, self.di_dp, self.di_dq),
            line_p_kw=lin(self.pl0_kw, self.dpl_dp, self.dpl_dq),
            line_q_kvar=lin(self.ql0_kvar, self.dql_dp, self.dql_dq),
            trafo_p_kw=lin(self.pt0_kw, self.dpt_dp, self.dpt_dq),
            trafo_q_kvar=lin(self.qt0_kvar, self.dqt_dp, self.dqt_dq),
        )


def compute_sensitivities(net, vm_pu=None, va_degree=None) -> Sensitivities:
    """Sensitivity coefficients at the operating point of ``net``.

    Work in progress: the interface is fixed by ``docs/conventions.md``.
    """
    raise NotImplementedError
