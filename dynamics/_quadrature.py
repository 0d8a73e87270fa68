"""Fixed-order quadrature and interpolation on panels (private helpers).

Everything here has a static number of nodes, so it can be traced once and then
``jit``-ted, ``vmap``-ped and differentiated.  The building block is a composite
Gauss-Legendre rule: an interval split into ``n_panels`` equal panels with ``order``
Legendre nodes each.  On the same nodes we provide

* the quadrature weights (``integrate``),
* the spectral cumulative-integration matrix ``S[k, j] = int_{-1}^{x_k} l_j(x) dx``
  (``l_j`` the Lagrange polynomials of the nodes), so running integrals are exact
  for polynomials of degree < ``order`` on every panel (``cumulative``),
* polynomial interpolation within the panel that contains a point (Chebyshev
  coefficients of the panel's interpolant, Clenshaw's recurrence; ``interpolate``).

For an integrand analytic in a strip of half-width ``d`` around the interval, the
error per panel of half-width ``h`` falls like ``rho**(-2 * order)`` for the
quadrature and ``rho**(-order)`` for interpolation and running integrals, with
``rho = b + sqrt(1 + b**2)``, ``b = d / h`` (Trefethen 2013, *Approximation Theory
and Approximation Practice*, ch. 8 and 19).
"""

from functools import lru_cache

import jax.numpy as jnp
import numpy

__all__ = ["gauss_legendre", "panel_nodes", "integrate", "cumulative", "interpolate", "sinh_rule"]


@lru_cache(maxsize=None)
def gauss_legendre(order):
    """Gauss-Legendre nodes and weights on [-1, 1] (numpy float64 arrays)."""
    x, w = numpy.polynomial.legendre.leggauss(order)
    return x, w


@lru_cache(maxsize=None)
def _integration_matrix(order):
    """S[k, j] = int_{-1}^{x_k} l_j(x) dx for the Legendre nodes x_k on [-1, 1]."""
    x, _ = gauss_legendre(order)
    leg = numpy.polynomial.legendre
    vander = leg.legvander(x, order - 1)          # V[k, n] = P_n(x_k)
    coef = numpy.linalg.inv(vander)               # column j: Legendre coefficients of l_j
    s = numpy.empty((order, order))
    for j in range(order):
        antider = leg.legint(coef[:, j], lbnd=-1.0)
        s[:, j] = leg.legval(x, antider)
    return s


def panel_nodes(lo, hi, n_panels, order):
    """Nodes of the composite rule on [lo, hi].

    Parameters
    ----------
    lo, hi : array_like
        Interval ends (broadcast together; any leading shape ``B``).
    n_panels, order : int
        Static panel count and Legendre order.

    Returns
    -------
    nodes : jax.Array, shape ``B + (n_panels, order)``
    half : jax.Array, shape ``B``
        Half-width of one panel (the Jacobian of the map from [-1, 1]).
    """
    x, _ = gauss_legendre(order)
    lo = jnp.asarray(lo)
    hi = jnp.asarray(hi)
    half = 0.5 * (hi - lo) / n_panels
    centres = lo[..., None] + (2.0 * jnp.arange(n_panels) + 1.0) * half[..., None]
    nodes = centres[..., None] + half[..., None, None] * jnp.asarray(x)
    return nodes, half


def integrate(values, half):
    """Composite Gauss-Legendre sum of ``values`` (shape ``B + (P, K)``) over the last two axes."""
    order = values.shape[-1]
    _, w = gauss_legendre(order)
    return half * jnp.sum(values * jnp.asarray(w), axis=(-2, -1))


def cumulative(values, half, reverse=False):
    """Running integral at every node.

    ``reverse=False`` gives int_lo^{x_node} f, ``reverse=True`` int_{x_node}^hi f.
    ``values`` has shape ``B + (P, K)``; the result has the same shape.  Both
    directions are sums of nearby terms (exclusive cumulative sums of panel totals
    plus an in-panel integration matrix), so a running integral that is tiny
    compared with the total keeps its relative precision.
    """
    order = values.shape[-1]
    _, w = gauss_legendre(order)
    s = _integration_matrix(order)
    if reverse:
        s = w[None, :] - s                                        # int_{x_k}^{1} l_j
    h = half[..., None, None]
    within = h * jnp.einsum("kj,...pj->...pk", jnp.asarray(s), values)
    panel_tot = half[..., None] * jnp.sum(values * jnp.asarray(w), axis=-1)   # B + (P,)
    zero = jnp.zeros_like(panel_tot[..., :1])
    if reverse:
        after = jnp.flip(jnp.cumsum(jnp.flip(panel_tot, -1), axis=-1), -1)
        others = jnp.concatenate([after[..., 1:], zero], axis=-1)
    else:
        others = jnp.concatenate([zero, jnp.cumsum(panel_tot, axis=-1)[..., :-1]], axis=-1)
    return others[..., None] + within


@lru_cache(maxsize=None)
def _chebyshev_matrix(order):
    """Matrix taking values at the Legendre nodes to Chebyshev coefficients."""
    x, _ = gauss_legendre(order)
    return numpy.linalg.inv(numpy.polynomial.chebyshev.chebvander(x, order - 1))


def interpolate(x, lo, hi, values):
    """Piecewise (per panel) polynomial interpolation of node values.

    The polynomial through the ``K`` Legendre nodes of each panel is converted to
    Chebyshev coefficients once and evaluated by Clenshaw's recurrence, so a point
    costs one gather and ``2 K`` multiply-adds.

    Parameters
    ----------
    x : array_like
        Points (any shape ``S``); points outside [lo, hi] use the end panel's
        polynomial (extrapolation, accurate only very close to the ends).
    lo, hi : scalar arrays
        Interval of the composite rule.
    values : jax.Array, shape ``(P, K)``
        Function values at ``panel_nodes(lo, hi, P, K)``.
    """
    n_panels, order = values.shape
    coef = values @ jnp.asarray(_chebyshev_matrix(order)).T       # (P, K)
    width = (hi - lo) / n_panels
    pos = (x - lo) / width
    idx = jnp.clip(jnp.floor(pos), 0, n_panels - 1).astype(jnp.int32)
    local = 2.0 * (pos - idx) - 1.0                               # in [-1, 1] inside the panel
    c = coef[idx]                                                 # S + (K,)
    b1 = jnp.zeros_like(local)
    b2 = jnp.zeros_like(local)
    for k in range(order - 1, 0, -1):
        b1, b2 = 2.0 * local * b1 - b2 + c[..., k], b1
    return local * b1 - b2 + c[..., 0]


def sinh_rule(zeta, reach, rule):
    """Nodes ``z = zeta sinh t`` for ``t`` in ``[-T, T]``, ``T = asinh(reach / zeta)``, on
    ``rule = (panels, order)`` equal Gauss-Legendre panels, and weights ``dz``: dense within
    ``zeta`` of zero, logarithmic beyond (line-of-sight integrals of centrally concentrated
    densities).  ``zeta``, ``reach`` may be traced; returns two arrays of ``panels * order``.
    """
    m, k = rule
    t_max = jnp.arcsinh(reach / zeta)
    tx, tw = gauss_legendre(k)
    half = t_max / m
    centres = -t_max + (2.0 * jnp.arange(m) + 1.0) * half
    t = (centres[:, None] + half * jnp.asarray(tx)).reshape(-1)
    wt = (half * jnp.broadcast_to(jnp.asarray(tw), (m, k))).reshape(-1)
    return zeta * jnp.sinh(t), wt * zeta * jnp.cosh(t)
