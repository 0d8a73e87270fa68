"""Type-II maximum a posteriori hyperparameters of one field's GP prior.

Kernel amplitudes and length scales get log-uniform priors on bounded ranges, mean
parameters flat or bounded priors; the optimiser (L-BFGS, scipy) works on unbounded
coordinates ``z`` with ``p = lo * (hi / lo) ** sigmoid(z)`` and the prior's Jacobian
included, so it never leaves the range.  An optimum within 1% (in ``sigmoid(z)``) of a
bound means the prior range excludes what the data prefer: it is reported by name.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from .means import mean_field
from .solvers import Solver

__all__ = ["FieldHyper", "fit_hyperparameters", "unpack"]


class FieldHyper(NamedTuple):
    """Optimised hyperparameters of one field."""

    amp: np.ndarray  # (n_terms,)
    scale: np.ndarray  # (n_terms,) spaxels
    mean_params: dict
    log_evidence: float
    at_bound: tuple  # names of parameters that ended on their prior bound
    noise_scale: float = 1.0  # factor on the per-spaxel errors (1 = taken as given)


def _layout(spec, amp_range, scale_range, mean_spec, noise_range):
    rows = []
    for t in range(spec.n_terms):
        rows.append((f"amp{t}", "log", amp_range[0], amp_range[1], None))
        rows.append((f"scale{t}", "log", scale_range[0], scale_range[1], None))
    if noise_range is not None:
        rows.append(("noise_scale", "log", noise_range[0], noise_range[1], 1.0))
    return rows + list(mean_spec)


def _to_param(z, transform, lo, hi):
    if transform == "free":
        return z, 0.0
    s = jax.nn.sigmoid(z)
    log_jac = jnp.log(s) + jnp.log1p(-s)
    if transform == "log":
        return jnp.exp(jnp.log(lo) + (jnp.log(hi) - jnp.log(lo)) * s), log_jac
    return lo + (hi - lo) * s, log_jac


def _from_param(p, transform, lo, hi):
    if transform == "free":
        return float(p)
    if transform == "log":
        u = (np.log(p) - np.log(lo)) / (np.log(hi) - np.log(lo))
    else:
        u = (p - lo) / (hi - lo)
    u = np.clip(u, 1e-4, 1 - 1e-4)
    return float(np.log(u / (1 - u)))


def unpack(z, rows, n_terms):
    """Unbounded vector -> (amp, scale, mean params dict, log prior of z)."""
    vals, log_prior = {}, 0.0
    for i, (name, tr, lo, hi, _) in enumerate(rows):
        vals[name], lj = _to_param(z[i], tr, lo, hi)
        log_prior = log_prior + lj
    amp = jnp.stack([vals[f"amp{t}"] for t in range(n_terms)])
    scale = jnp.stack([vals[f"scale{t}"] for t in range(n_terms)])
    noise = vals.pop("noise_scale", 1.0)
    mean = {k: v for k, v in vals.items() if not k.startswith(("amp", "scale"))}
    return amp, scale, mean, log_prior, noise


@functools.partial(jax.jit, static_argnames=("evidence_fn", "spec", "layout", "mean_kind"))
def _objective_value_and_grad(z, y, lo, hi, state, *, evidence_fn, spec, layout, mean_kind):
    """-(log evidence + log prior) and its gradient; compiled once per solver kind, kernel,
    parameter layout and grid shape (the solver's arrays are arguments, not constants)."""

    def objective(z):
        rows = [(name, tr, lo[i], hi[i], None) for i, (name, tr) in enumerate(layout)]
        amp, scale, mp, log_prior, noise = unpack(z, rows, spec.n_terms)
        ny, nx = y.shape
        yy, xx = jnp.mgrid[:ny, :nx]
        resid = y - mean_field(mean_kind, mp, yy, xx)
        val = -(evidence_fn(spec, state, amp, scale, resid, noise) + log_prior)
        return jnp.where(jnp.isfinite(val), val, 1e300)

    return jax.value_and_grad(objective)(z)


def fit_hyperparameters(solver: Solver, spec, y, w, mean_kind, mean_spec, amp_range, scale_range, starts=(0.3, 0.6),
                        noise_range=None):
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
    """
    rows = _layout(spec, amp_range, scale_range, mean_spec, noise_range)
    n_terms = spec.n_terms
    ny, nx = y.shape
    yy, xx = jnp.mgrid[:ny, :nx]
    y_j = jnp.asarray(np.where(w > 0, y, 0.0))
    layout = tuple((name, tr) for name, tr, _, _, _ in rows)
    lo_arr = jnp.asarray([np.nan if r[2] is None else r[2] for r in rows], dtype=float)
    hi_arr = jnp.asarray([np.nan if r[3] is None else r[3] for r in rows], dtype=float)
    evidence_fn, state = solver.evidence

    def fun(z):
        v, g = _objective_value_and_grad(jnp.asarray(z), y_j, lo_arr, hi_arr, state, evidence_fn=evidence_fn, spec=spec,
                                         layout=layout, mean_kind=mean_kind)
        return float(v), np.asarray(g, dtype=float)

    obs = w > 0
    amp0 = float(np.clip(np.std(y[obs]) if obs.sum() > 1 else 1.0, amp_range[0] * 1.01, amp_range[1] * 0.99))
    best = None
    for frac in starts:
        z0 = []
        for name, tr, lo, hi, start in rows:
            if name.startswith("amp"):
                p = amp0 / np.sqrt(n_terms)
            elif name.startswith("scale"):
                p = float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))
            else:
                p = start
            z0.append(_from_param(p, tr, lo, hi))
        res = minimize(fun, np.asarray(z0), jac=True, method="L-BFGS-B", options=dict(maxiter=300))
        if best is None or res.fun < best.fun:
            best = res
    z = jnp.asarray(best.x)
    amp, scale, mp, _, noise = unpack(z, rows, n_terms)
    at_bound = []
    for i, (name, tr, lo, hi, _) in enumerate(rows):
        if tr != "free":
            s = 1.0 / (1.0 + np.exp(-best.x[i]))
            if s < 0.01 or s > 0.99:
                at_bound.append(f"{name}={'min' if s < 0.5 else 'max'}")
    resid = y_j - mean_field(mean_kind, mp, yy, xx)
    log_ev = float(solver.log_evidence(amp, scale, resid, noise))
    return FieldHyper(np.asarray(amp), np.asarray(scale), {k: float(v) for k, v in mp.items()}, log_ev,
                      tuple(at_bound), float(noise))
