"""Propagate the hyperparameters' uncertainty into a field's posterior (INLA-style).

The type-II MAP (:mod:`cube3d.spatial.hyper`) plugs one set of hyperparameters ``theta``
(amplitudes, length scales, error factor, mean parameters) into the GP posterior.  When
the data constrain ``theta`` weakly (a small amplitude at low S/N: the evidence is flat
from zero up to a few times the optimum), that posterior is overconfident.  Here the
field's posterior is instead the mixture

    p(f | y) = sum_k Delta_k p(f | theta_k, y),    Delta_k ~ p(theta_k | y) * (volume of point k)

over a central composite design around the mode (Rue, Martino & Chopin 2009, J. R.
Stat. Soc. B 71, 319, Sects. 3.1 and 6.5): each conditional posterior is
the GP's (Rasmussen & Williams 2006 eqs. 2.23-2.24) and the reported moments are the
mixture's, ``E[f] = sum_k Delta_k m_k`` and ``Var[f] = sum_k Delta_k (v_k + (m_k - E[f])^2)``
(the law of total variance).

Steps, in the optimiser's unbounded coordinates ``z`` (so bounded parameters stay inside
their ranges and the prior's Jacobian is part of ``log p(z | y)``):

1. the Hessian ``H`` of ``-log p(z | y)`` at the mode ``z*`` by central differences of the
   analytic gradient, and its eigen-decomposition ``H = V diag(lambda) V^T``; the
   standardised coordinates are ``t`` with ``z = z* + V diag(lambda^-1/2) t`` (Rue et al.
   2009 Sect. 3.1);
2. skewness: along every axis, ``log p`` is evaluated at ``t = +-2``; a Gaussian drops by
   2 there, so the axis is rescaled on each side by ``sqrt(2 / drop)`` (the asymmetric
   scalings of Martins, Simpson, Lindgren & Rue 2013, Comput. Stat. Data Anal. 67, 68);
   the amplitude's posterior in ``ln amp`` has a long tail towards zero;
3. the design: the centre, ``2 d`` axial points at radius ``f0 sqrt(d)`` and ``n_f`` points
   ``(+-f0, ..., +-f0)`` of a two-level factorial (a folded-over Hadamard design:
   orthogonal, balanced and symmetric); for a standard Gaussian, weights ``1 - 1/f0^2``
   at the centre and ``1 / (f0^2 (2 d + n_f))`` elsewhere integrate 1 and every ``t_i t_j``
   exactly (derived here by matching those moments; Rue et al. 2009 Sect. 6.5 give the
   same construction);
4. every point's weight is its Gaussian design weight times the importance ratio
   ``p(z_k | y) |dz/dt| / N(t_k | 0, I)`` of the actual posterior to the (rescaled)
   Gaussian, normalised to sum to 1, so a posterior that is not Gaussian in ``z`` still
   gets its own mass.

Cost: ``2 d`` gradients, ``2 d`` + the design's log-posterior values, and one GP
posterior per design point (``d = 3``: 15 points; ``d = 4``: 25; ``d = 10``: 53).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .hyper import HyperProblem, hyper_values, mean_map, neg_log_posterior
from .solvers import Solver

__all__ = ["HyperIntegration", "ccd_design", "integrate_hyperparameters", "F0"]

#: design radius factor ``f0 > 1`` (Rue et al. 2009 Sect. 6.5); the centre keeps weight
#: ``1 - 1/f0^2`` = 0.17 of a Gaussian's mass
F0 = 1.1
#: the asymmetric scaling of an axis is kept within this factor of the Hessian's
MAX_RESCALE = 5.0
#: eigenvalues of the Hessian below this are raised to it (flat directions of ``z``)
MIN_CURVATURE = 1e-4
#: design points whose weight is below this fraction of the largest are skipped
MIN_WEIGHT = 1e-6


class HyperIntegration(NamedTuple):
    """A field's posterior integrated over its hyperparameters (GP units, mean included).

    mean, var : ndarray (ny, nx)
        Mixture mean and total variance.
    centre_mean, centre_var : ndarray (ny, nx)
        The conditional posterior at the mode (the plug-in answer).
    weights : ndarray (n_points,)
        Normalised weights of the design points that were evaluated.
    z : ndarray (n_points, d)
        Those points in the optimiser's unbounded coordinates.
    """

    mean: np.ndarray
    var: np.ndarray
    centre_mean: np.ndarray
    centre_var: np.ndarray
    weights: np.ndarray
    z: np.ndarray

    @property
    def n_points(self):
        return int(self.weights.size)

    @property
    def effective_points(self):
        """Kish's effective number of points, ``1 / sum(w^2)``."""
        return float(1.0 / np.sum(self.weights**2))


def _factorial(d):
    """Two-level factorial part: rows of a Sylvester-Hadamard matrix (columns 1..d, the
    constant column left out) and their negatives, duplicates removed.  The columns are
    balanced and orthogonal, and the fold-over makes every odd moment vanish."""
    m = 1
    while m < d + 1:
        m *= 2
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    rows = h[:, 1:d + 1]
    return np.unique(np.vstack([rows, -rows]), axis=0)


def ccd_design(d, f0=F0):
    """Points ``t`` (n, d) and weights (n,) of a central composite design for ``N(0, I_d)``.

    The centre, ``2 d`` axial points at ``+- f0 sqrt(d)`` and the factorial points at
    ``+- f0`` per coordinate, all non-central points on the sphere of radius ``f0 sqrt(d)``.
    Weights: ``1 - 1/f0^2`` at the centre, the rest shared equally, so that
    ``sum w = 1`` and ``sum w t t^T = I`` (from ``sum_k w t_ki^2 = W f0^2 = 1`` for the
    total non-central weight ``W``, by the symmetry of the design).
    """
    if d < 1:
        raise ValueError(f"ccd_design: d={d} must be >= 1")
    r = f0 * np.sqrt(d)
    axial = np.vstack([r * np.eye(d), -r * np.eye(d)])
    pts = np.vstack([np.zeros((1, d)), axial, f0 * _factorial(d)])
    pts, inverse = np.unique(np.round(pts, 12), axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    n_outer = 2 * d + _factorial(d).shape[0]
    raw = np.r_[1.0 - 1.0 / f0**2, np.full(n_outer, 1.0 / (f0**2 * n_outer))]
    w = np.bincount(inverse, weights=raw, minlength=pts.shape[0])  # coincident points add up (d = 1)
    order = np.argsort(np.sum(pts**2, axis=1), kind="stable")  # the centre first
    return pts[order], w[order]


def _hessian(problem, z, step=1e-4):
    """Hessian of ``-log p(z | y)`` by central differences of its analytic gradient."""
    d = z.size
    h = np.zeros((d, d))
    for j in range(d):
        dz = np.zeros(d)
        dz[j] = step * max(1.0, abs(z[j]))
        gp = neg_log_posterior(problem, z + dz)[1]
        gm = neg_log_posterior(problem, z - dz)[1]
        h[:, j] = (gp - gm) / (2.0 * dz[j])
    return 0.5 * (h + h.T)


def _log_post(problem, z):
    v = neg_log_posterior(problem, z)[0]
    return -v if v < 1e299 else -np.inf


def integrate_hyperparameters(problem: HyperProblem, solver: Solver, z_mode, f0=F0) -> HyperIntegration:
    """Mix the field's conditional posteriors over a design around the hyperparameter mode.

    Parameters
    ----------
    problem : HyperProblem
        The field's hyperparameter posterior (:func:`cube3d.spatial.hyper.hyper_problem`).
    solver : Solver
        Gives the conditional posterior at every design point.
    z_mode : array (d,)
        The mode of ``log p(z | y)`` (:attr:`FieldHyper.z`).
    f0 : float
        Design radius factor (> 1).

    Returns
    -------
    HyperIntegration
    """
    z_mode = np.asarray(z_mode, dtype=float)
    d = z_mode.size
    lp_mode = _log_post(problem, z_mode)
    lam, vec = np.linalg.eigh(_hessian(problem, z_mode))
    lam = np.maximum(lam, MIN_CURVATURE)
    axes = vec / np.sqrt(lam)  # column i: one standard deviation along eigen-direction i

    # skewness: rescale each half-axis so that log p drops by 2 at t = +-2 (Gaussian value)
    side = np.ones((d, 2))  # [:, 0] for t < 0, [:, 1] for t > 0
    for i in range(d):
        for k, sign in enumerate((-1.0, 1.0)):
            drop = lp_mode - _log_post(problem, z_mode + 2.0 * sign * axes[:, i])
            ratio = np.sqrt(2.0 / drop) if drop > 0 else MAX_RESCALE
            side[i, k] = float(np.clip(ratio, 1.0 / MAX_RESCALE, MAX_RESCALE))
    mid = side.mean(axis=1)

    t, omega = ccd_design(d, f0)
    scale_t = np.where(t < 0, side[:, 0], np.where(t > 0, side[:, 1], mid))  # (n, d)
    zs = z_mode + (t * scale_t) @ axes.T
    log_lp = np.array([lp_mode] + [_log_post(problem, z) for z in zs[1:]])
    # importance ratio p(z_k) |dz/dt| / N(t_k): the Jacobian of the piecewise scaling
    # relative to its mean on each axis (1 where t_i = 0)
    log_jac = np.sum(np.log(scale_t / mid), axis=1)
    log_ratio = log_lp - lp_mode + 0.5 * np.sum(t**2, axis=1) + log_jac
    with np.errstate(invalid="ignore"):
        log_w = np.where(np.isfinite(log_ratio), np.log(omega) + log_ratio, -np.inf)
    weights = np.exp(log_w - np.max(log_w))
    keep = weights >= MIN_WEIGHT * weights.max()
    keep[0] = True
    weights, zs = weights[keep] / weights[keep].sum(), zs[keep]

    means, variances = [], []
    for z in zs:
        amp, scale, mp, noise = hyper_values(problem, z)
        mu = mean_map(problem, mp)
        post = solver.posterior(amp, scale, problem.y - mu, noise)
        means.append(np.asarray(mu + post.mean, dtype=float))
        variances.append(np.maximum(np.asarray(post.var, dtype=float), 0.0))
    means, variances = np.stack(means), np.stack(variances)
    mean = np.tensordot(weights, means, axes=1)
    var = np.tensordot(weights, variances + (means - mean) ** 2, axes=1)  # law of total variance
    return HyperIntegration(mean, var, means[0], variances[0], weights, zs)
