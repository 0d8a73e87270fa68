"""Type-II maximum a posteriori hyperparameters of one field's GP prior.

Length scales and the error factor get log-uniform priors on bounded ranges, mean
parameters flat or bounded priors.  Kernel amplitudes get a penalised-complexity prior
(:func:`amplitude_log_prior`): an exponential in the amplitude itself, truncated to a
bounded range.  The optimiser (L-BFGS, scipy) works on unbounded coordinates ``z`` with
``p = lo * (hi / lo) ** sigmoid(z)`` and the prior's Jacobian included, so it never
leaves the range.  An optimum within 1% (in ``sigmoid(z)``) of a bound means the prior
range excludes what the data prefer: it is reported by name.

The same log posterior ``log p(z | y)`` (:func:`neg_log_posterior`, held with its data in
a :class:`HyperProblem`) is what :mod:`cube3d.spatial.integrate` integrates over when the
hyperparameters' uncertainty is propagated into the fields.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from .means import mean_field
from .solvers import Evidence, Solver

__all__ = ["FieldHyper", "HyperProblem", "PC_TAIL_PROBABILITY", "PC_UPPER", "amplitude_log_prior",
           "amplitude_rate", "hyper_problem", "neg_log_posterior", "hyper_values", "mean_map", "fit_hyperparameters",
           "optimise_hyperparameters", "unpack"]

#: ``P(amp > PC_UPPER * spread) = PC_TAIL_PROBABILITY`` fixes the rate of the amplitude
#: prior (:func:`amplitude_rate`); Simpson et al. (2017) state such priors as a tail
#: probability ``P(amp > U) = alpha`` on an interpretable upper bound ``U``
PC_TAIL_PROBABILITY = 0.05
PC_UPPER = 2.0


class FieldHyper(NamedTuple):
    """Optimised hyperparameters of one field."""

    amp: np.ndarray  # (n_terms,)
    scale: np.ndarray  # (n_terms,) spaxels
    mean_params: dict
    log_evidence: float
    at_bound: tuple  # names of parameters that ended on their prior bound
    noise_scale: float = 1.0  # factor on the per-spaxel errors (1 = taken as given)
    z: Optional[np.ndarray] = None  # the optimum in the optimiser's unbounded coordinates


def amplitude_rate(spread):
    """Rate ``lambda`` of the exponential amplitude prior: ``P(amp > 2 spread) = 0.05``.

    ``P(amp > U) = exp(-lambda U) = alpha`` gives ``lambda = -ln(alpha) / U``
    (Simpson et al. 2017, Stat. Sci. 32, 1: their prior for the standard deviation of a
    Gaussian effect); here ``lambda = ln(20) / (2 spread) = 1.5 / spread``, a prior mean
    amplitude of 0.67 ``spread``.  ``spread`` (data units) is the larger of the standard
    deviation of the field's data and their typical error
    (:func:`cube3d.spatial.twostep.field_spread`).  At high S/N the data's scatter is
    about the amplitude itself (a finite map's realised scatter is often below it, as the
    mean absorbs part), at low S/N the noise dominates it: twice the spread is a
    generous upper bound in both regimes.  Measured on the mocks of
    ``tests/benchmarks/validate_gp_coverage.py``, ``U = spread`` instead lowered the
    68% coverage of small-amplitude fields by 0.00-0.02 and changed nothing at large
    amplitudes.
    """
    return float(-np.log(PC_TAIL_PROBABILITY) / (PC_UPPER * spread))


def amplitude_log_prior(amp, rate):
    """Log density of the amplitude prior in ``ln amp``, relative to a log-uniform one.

    The penalised-complexity prior of a GP amplitude (the standard deviation of a Gaussian
    effect; Simpson et al. 2017) is exponential in the amplitude,
    ``p(amp) = lambda exp(-lambda amp)``: it penalises the distance from the base model
    ``amp = 0`` at a constant rate and keeps a finite density there.  In ``ln amp`` it is
    ``lambda amp exp(-lambda amp)``, which vanishes as ``amp -> 0``: unlike a log-uniform
    prior it has no flat tail towards zero amplitude, so the posterior of ``ln amp`` can
    be integrated (:mod:`cube3d.spatial.integrate`) even where the data cannot tell a
    small amplitude from none.  Returned without constants: ``ln amp - lambda amp``.
    """
    return jnp.log(amp) - rate * amp


class HyperProblem(NamedTuple):
    """The hyperparameter posterior of one field: data, prior layout and the solver's
    evidence, everything :func:`neg_log_posterior` needs.

    ``rows``: ``(name, transform, lo, hi, start)`` per coordinate of ``z``; ``rate``:
    the amplitude prior's rate (None: log-uniform amplitudes).
    """

    rows: tuple
    rate: Optional[float]
    y: jax.Array  # (ny, nx), 0 where unobserved
    evidence: Evidence
    spec: object
    mean_kind: str


def _layout(spec, amp_range, scale_range, mean_spec, noise_range, amp_transform):
    rows = []
    for t in range(spec.n_terms):
        rows.append((f"amp{t}", amp_transform, amp_range[0], amp_range[1], None))
        rows.append((f"scale{t}", "log", scale_range[0], scale_range[1], None))
    if noise_range is not None:
        rows.append(("noise_scale", "log", noise_range[0], noise_range[1], 1.0))
    return tuple(rows) + tuple(mean_spec)


def _to_param(z, transform, lo, hi, rate):
    if transform == "free":
        return z, 0.0
    s = jax.nn.sigmoid(z)
    log_jac = jnp.log(s) + jnp.log1p(-s)  # log-uniform (or uniform) in p is logistic in z
    if transform == "linear":
        return lo + (hi - lo) * s, log_jac
    p = jnp.exp(jnp.log(lo) + (jnp.log(hi) - jnp.log(lo)) * s)
    if transform == "log_pc":  # exponential in p: the PC amplitude prior, truncated to (lo, hi)
        log_jac = log_jac + amplitude_log_prior(p, rate)
    return p, log_jac


def _from_param(p, transform, lo, hi):
    if transform == "free":
        return float(p)
    if transform == "linear":
        u = (p - lo) / (hi - lo)
    else:
        u = (np.log(p) - np.log(lo)) / (np.log(hi) - np.log(lo))
    u = np.clip(u, 1e-4, 1 - 1e-4)
    return float(np.log(u / (1 - u)))


def unpack(z, rows, n_terms, rate=None):
    """Unbounded vector -> (amp, scale, mean params dict, log prior of z, noise scale)."""
    vals, log_prior = {}, 0.0
    for i, (name, tr, lo, hi, _) in enumerate(rows):
        vals[name], lj = _to_param(z[i], tr, lo, hi, rate)
        log_prior = log_prior + lj
    amp = jnp.stack([vals[f"amp{t}"] for t in range(n_terms)])
    scale = jnp.stack([vals[f"scale{t}"] for t in range(n_terms)])
    noise = vals.pop("noise_scale", 1.0)
    mean = {k: v for k, v in vals.items() if not k.startswith(("amp", "scale"))}
    return amp, scale, mean, log_prior, noise


@functools.partial(jax.jit, static_argnames=("evidence_fn", "spec", "layout", "mean_kind"))
def _objective_value_and_grad(z, y, lo, hi, rate, state, *, evidence_fn, spec, layout, mean_kind):
    """-(log evidence + log prior) and its gradient; compiled once per solver kind, kernel,
    parameter layout and grid shape (the solver's arrays are arguments, not constants)."""

    def objective(z):
        rows = [(name, tr, lo[i], hi[i], None) for i, (name, tr) in enumerate(layout)]
        amp, scale, mp, log_prior, noise = unpack(z, rows, spec.n_terms, rate)
        ny, nx = y.shape
        yy, xx = jnp.mgrid[:ny, :nx]
        resid = y - mean_field(mean_kind, mp, yy, xx)
        val = -(evidence_fn(spec, state, amp, scale, resid, noise) + log_prior)
        return jnp.where(jnp.isfinite(val), val, 1e300)

    return jax.value_and_grad(objective)(z)


def hyper_problem(solver: Solver, spec, y, w, mean_kind, mean_spec, amp_range, scale_range, noise_range=None,
                  amp_rate=None) -> HyperProblem:
    """The :class:`HyperProblem` of one field (arguments as :func:`fit_hyperparameters`)."""
    transform = "log" if amp_rate is None else "log_pc"
    rows = _layout(spec, amp_range, scale_range, mean_spec, noise_range, transform)
    y_j = jnp.asarray(np.where(np.asarray(w) > 0, y, 0.0))
    return HyperProblem(rows, None if amp_rate is None else float(amp_rate), y_j, solver.evidence, spec, mean_kind)


def neg_log_posterior(problem: HyperProblem, z):
    """``-(log evidence + log prior)`` at ``z`` (unbounded coordinates, Jacobian included)
    and its gradient, as a float and a numpy array; non-finite values read as 1e300."""
    rows = problem.rows
    layout = tuple((name, tr) for name, tr, _, _, _ in rows)
    lo = jnp.asarray([np.nan if r[2] is None else r[2] for r in rows], dtype=float)
    hi = jnp.asarray([np.nan if r[3] is None else r[3] for r in rows], dtype=float)
    rate = jnp.asarray(0.0 if problem.rate is None else problem.rate)
    evidence_fn, state = problem.evidence
    v, g = _objective_value_and_grad(jnp.asarray(z, dtype=float), problem.y, lo, hi, rate, state,
                                     evidence_fn=evidence_fn, spec=problem.spec, layout=layout,
                                     mean_kind=problem.mean_kind)
    return float(v), np.asarray(g, dtype=float)


def hyper_values(problem: HyperProblem, z):
    """``(amp, scale, mean params dict, noise_scale)`` at ``z`` (jax arrays, floats)."""
    amp, scale, mp, _, noise = unpack(jnp.asarray(z, dtype=float), problem.rows, problem.spec.n_terms, problem.rate)
    return amp, scale, mp, noise


def mean_map(problem: HyperProblem, mean_params):
    """The mean field (ny, nx) with the given mean parameters."""
    ny, nx = problem.y.shape
    yy, xx = jnp.mgrid[:ny, :nx]
    return mean_field(problem.mean_kind, mean_params, yy, xx)


def fit_hyperparameters(solver: Solver, spec, y, w, mean_kind, mean_spec, amp_range, scale_range, starts=(0.3, 0.6),
                        noise_range=None, amp_rate=None, z0=None):
    """Maximise log evidence + log prior over amplitudes, length scales and mean parameters.

    Parameters
    ----------
    solver : Solver
        Its :attr:`~cube3d.spatial.solvers.Solver.evidence` is the objective's likelihood.
    spec : KernelSpec
    y, w : ndarray (ny, nx)
        Data and precisions (0 = unobserved; ``y`` there is ignored).
    mean_kind : str
        ``"constant"`` or ``"disk"``.
    mean_spec : list
        From :func:`cube3d.spatial.means.mean_parameters`.
    amp_range, scale_range : (float, float)
        Prior ranges of the amplitudes (data units) and length scales (spaxels).
    starts : tuple of float
        Starting length scales as fractions of the log range (best optimum kept).
    noise_range : (float, float) or None
        Prior range of a factor on the per-spaxel errors (log-uniform); None keeps
        the errors as given.  Laplace errors of low-S/N fits are only approximate; a
        white-noise factor keeps a short length scale from absorbing their misfit.
    amp_rate : float or None
        Rate of the exponential (penalised-complexity) amplitude prior
        (:func:`amplitude_log_prior`, :func:`amplitude_rate`); None: log-uniform.
    z0 : array or None
        A start in the unbounded coordinates (e.g. an earlier optimum of the same
        layout), used instead of ``starts``.

    Returns
    -------
    FieldHyper
        With ``z`` the optimum in the unbounded coordinates (see :func:`hyper_problem`).
    """
    problem = hyper_problem(solver, spec, y, w, mean_kind, mean_spec, amp_range, scale_range, noise_range, amp_rate)
    return optimise_hyperparameters(problem, solver, w, starts, z0)


def optimise_hyperparameters(problem: HyperProblem, solver: Solver, w, starts=(0.3, 0.6), z0=None) -> FieldHyper:
    """The mode of ``log p(z | y)`` for a :class:`HyperProblem` (L-BFGS from each start,
    best kept); arguments and result as :func:`fit_hyperparameters`."""
    rows = problem.rows
    n_terms = problem.spec.n_terms

    def fun(z):
        return neg_log_posterior(problem, z)

    y = np.asarray(problem.y)
    obs = np.asarray(w) > 0
    amp_lo, amp_hi = next(r[2:4] for r in rows if r[0] == "amp0")
    amp0 = float(np.clip(np.std(y[obs]) if obs.sum() > 1 else 1.0, amp_lo * 1.01, amp_hi * 0.99))
    if z0 is not None and len(z0) == len(rows):
        inits = [np.asarray(z0, dtype=float)]
    else:
        inits = []
        for frac in starts:
            z_init = []
            for name, tr, lo, hi, start in rows:
                if name.startswith("amp"):
                    p = amp0 / np.sqrt(n_terms)
                elif name.startswith("scale"):
                    p = float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))
                else:
                    p = start
                z_init.append(_from_param(p, tr, lo, hi))
            inits.append(np.asarray(z_init))
    best = None
    for z_init in inits:
        res = minimize(fun, z_init, jac=True, method="L-BFGS-B", options=dict(maxiter=300))
        if best is None or res.fun < best.fun:
            best = res
    amp, scale, mp, noise = hyper_values(problem, best.x)
    at_bound = []
    for i, (name, tr, lo, hi, _) in enumerate(rows):
        if tr != "free":
            s = 1.0 / (1.0 + np.exp(-best.x[i]))
            if s < 0.01 or s > 0.99:
                at_bound.append(f"{name}={'min' if s < 0.5 else 'max'}")
    log_ev = float(solver.log_evidence(amp, scale, problem.y - mean_map(problem, mp), noise))
    return FieldHyper(np.asarray(amp), np.asarray(scale), {k: float(v) for k, v in mp.items()}, log_ev,
                      tuple(at_bound), float(noise), np.asarray(best.x, dtype=float))
